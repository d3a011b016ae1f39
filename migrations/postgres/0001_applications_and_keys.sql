-- Applications (OAuth clients). Secrets are kept only as argon2id PHC strings.
CREATE TABLE applications (
    id             UUID PRIMARY KEY,
    client_id      TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    secret_hash    TEXT NOT NULL,
    allowed_scopes TEXT NOT NULL,
    default_scopes TEXT NOT NULL,
    sandbox        BOOLEAN NOT NULL DEFAULT FALSE,
    disabled       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    last_used_at   TIMESTAMPTZ
);

-- Token signing keys. The private key is sealed (AES-256-GCM) with the master key.
CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    algorithm    TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('next', 'current', 'retired')),
    private_key  BYTEA NOT NULL,
    public_jwk   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    activated_at TIMESTAMPTZ,
    retired_at   TIMESTAMPTZ
);

-- Replicas starting together race to create the first key; only one can win.
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (state) WHERE state = 'current';
