-- Several secrets per application, each with its own id, description, expiry and use
-- limit. The secrets kept on the application row (current, and rotated-out in grace) move
-- here; they keep verifying as before.
CREATE TABLE app_secrets (
    id           BLOB PRIMARY KEY,
    app_id       BLOB NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    secret_hash  TEXT NOT NULL,
    -- The start of a generated secret; NULL for imported ones and those moved here.
    prefix       TEXT,
    description  TEXT NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    use_count    INTEGER NOT NULL DEFAULT 0,
    max_uses     INTEGER CHECK (max_uses > 0)
);
CREATE INDEX app_secrets_by_app ON app_secrets (app_id, created_at);

INSERT INTO app_secrets (id, app_id, secret_hash, created_at)
SELECT randomblob(16), id, secret_hash, created_at FROM applications;
-- A rotated-out secret whose grace has ended is not worth keeping (times are unix
-- microseconds).
INSERT INTO app_secrets (id, app_id, secret_hash, created_at, expires_at)
SELECT randomblob(16), id, previous_secret_hash, created_at, previous_secret_expires_at
FROM applications
WHERE previous_secret_hash IS NOT NULL
  AND previous_secret_expires_at > CAST(strftime('%s', 'now') AS INTEGER) * 1000000;

ALTER TABLE applications DROP COLUMN secret_hash;
ALTER TABLE applications DROP COLUMN previous_secret_hash;
ALTER TABLE applications DROP COLUMN previous_secret_expires_at;

-- The secret behind the token that created a grant: revoking the secret with its tokens
-- revokes the grant. No foreign key: the grant outlives a secret revoked without tokens.
ALTER TABLE auth_grants ADD COLUMN secret_id BLOB;
CREATE INDEX auth_grants_by_secret ON auth_grants (secret_id) WHERE secret_id IS NOT NULL;
