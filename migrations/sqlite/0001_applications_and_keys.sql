-- Applications (OAuth clients). Secrets are kept only as argon2id PHC strings.
-- Ids are 16-byte UUID blobs; timestamps are unix microseconds so they sort and compare.
CREATE TABLE applications (
    id             BLOB PRIMARY KEY,
    client_id      TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    secret_hash    TEXT NOT NULL,
    allowed_scopes TEXT NOT NULL,
    default_scopes TEXT NOT NULL,
    sandbox        INTEGER NOT NULL DEFAULT 0,
    disabled       INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    last_used_at   INTEGER
);

-- Token signing keys. The private key is sealed (AES-256-GCM) with the master key.
CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    algorithm    TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('next', 'current', 'retired')),
    private_key  BLOB NOT NULL,
    public_jwk   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    activated_at INTEGER,
    retired_at   INTEGER
);

-- Replicas starting together race to create the first key; only one can win.
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (state) WHERE state = 'current';
