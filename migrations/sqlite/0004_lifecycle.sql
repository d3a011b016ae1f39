-- Secret rotation: the previous secret keeps working until its grace period ends.
ALTER TABLE applications ADD COLUMN previous_secret_hash TEXT;
ALTER TABLE applications ADD COLUMN previous_secret_expires_at INTEGER;

-- Revoked token ids, kept until the token would have expired anyway, then purged.
CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER NOT NULL
);

CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at);
CREATE INDEX revoked_tokens_recent ON revoked_tokens (revoked_at);

-- Key rotation publishes one `next` key ahead of its use.
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (state) WHERE state = 'next';
