-- Lineage: a grant remembers the app and the enrollment of the token that created it, goes
-- with them when they are deleted, and belongs to its subject *through that app*: one owner
-- enrolled with two apps is two profiles.
ALTER TABLE auth_grants ADD COLUMN app_id BLOB REFERENCES applications (id) ON DELETE CASCADE;
ALTER TABLE auth_grants
    ADD COLUMN enrollment_id BLOB REFERENCES enrollments (id) ON DELETE CASCADE;

-- Only a record that existed when the grant was made can be where it came from: an app or
-- enrollment created later under the same client_id or owner is another one.
UPDATE auth_grants SET app_id =
    (SELECT a.id FROM applications a
     WHERE a.client_id = auth_grants.client_id AND a.created_at <= auth_grants.created_at);
UPDATE auth_grants SET enrollment_id =
    (SELECT e.id FROM enrollments e
     WHERE e.app_id = auth_grants.app_id AND e.owner_id = auth_grants.profile_id
       AND e.created_at <= auth_grants.created_at)
WHERE profile_kind = 'owner';
-- Grants whose app or enrollment is gone are dropped: with lineage recorded they would
-- look like the operator's own, and what they came from no longer stands.
DELETE FROM auth_grants
WHERE (app_id IS NULL AND client_id <> 'portcullis-admin')
   OR (profile_kind = 'owner' AND app_id IS NOT NULL AND enrollment_id IS NULL);

-- The profile a grant belongs to, as one key column: its app, or the nil UUID for the
-- operator's owner tokens (NULL cannot be matched with `=`, which the index needs).
ALTER TABLE auth_grants ADD COLUMN profile_app BLOB NOT NULL DEFAULT x'00000000000000000000000000000000';
UPDATE auth_grants SET profile_app = app_id WHERE app_id IS NOT NULL;

-- The active-grant cap counts per profile, app included ('no app' is the nil UUID, sixteen
-- zero bytes: a primary key cannot hold NULL).
DROP TABLE grant_counters;
CREATE TABLE grant_counters (
    profile_kind TEXT NOT NULL,
    profile_id   TEXT NOT NULL,
    profile_app  BLOB NOT NULL,
    active       INTEGER NOT NULL,
    PRIMARY KEY (profile_kind, profile_id, profile_app)
);
INSERT INTO grant_counters (profile_kind, profile_id, profile_app, active)
SELECT profile_kind, profile_id, COALESCE(app_id, zeroblob(16)), COUNT(*)
FROM auth_grants WHERE status = 'active'
GROUP BY profile_kind, profile_id, COALESCE(app_id, zeroblob(16));

DROP INDEX auth_grants_by_profile;
CREATE INDEX auth_grants_by_profile
    ON auth_grants (profile_kind, profile_id, profile_app, created_at DESC, id DESC);
DROP INDEX auth_grants_active_by_profile;
CREATE INDEX auth_grants_active_by_profile
    ON auth_grants (profile_kind, profile_id, profile_app) WHERE status = 'active';
-- Cascading deletes look grants up by their parents.
CREATE INDEX auth_grants_by_app ON auth_grants (app_id);
CREATE INDEX auth_grants_by_enrollment ON auth_grants (enrollment_id);
