-- The cap on a profile's active auth grants. grant_counters holds an upper bound of each
-- profile's active grants (revocation and expiry do not lower it), so a creation reads one
-- row; the exact count, over the partial index, is taken only when the bound reaches the cap.
CREATE TABLE grant_counters (
    profile_kind TEXT NOT NULL,
    profile_id   TEXT NOT NULL,
    active       BIGINT NOT NULL,
    PRIMARY KEY (profile_kind, profile_id)
);

INSERT INTO grant_counters (profile_kind, profile_id, active)
SELECT profile_kind, profile_id, COUNT(*) FROM auth_grants
WHERE status = 'active'
GROUP BY profile_kind, profile_id;

CREATE INDEX auth_grants_active_by_profile
    ON auth_grants (profile_kind, profile_id) WHERE status = 'active';
