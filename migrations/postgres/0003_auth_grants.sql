-- Auth grants: scoped, expiring, revocable credentials a profile creates for itself.
-- The profile is the subject (kind + id) of the token that created the grant.
CREATE TABLE auth_grants (
    id           UUID PRIMARY KEY,
    profile_kind TEXT NOT NULL,
    profile_id   TEXT NOT NULL,
    client_id    TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    challenge    TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    scope        TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);

-- Keyset pagination: newest first within one profile, never a scan of its history.
CREATE INDEX auth_grants_by_profile
    ON auth_grants (profile_kind, profile_id, created_at DESC, id DESC);
