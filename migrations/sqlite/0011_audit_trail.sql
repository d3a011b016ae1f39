-- The audit trail: credential events (issued, failed, rotated, revoked, disabled, refused),
-- written in batches by each replica and purged after audit.retention_days. No foreign
-- keys: an event outlives the app, secret or grant it names.
CREATE TABLE audit_events (
    id            BLOB PRIMARY KEY,
    at            INTEGER NOT NULL,
    event         TEXT NOT NULL,
    app_id        BLOB,
    secret_id     BLOB,
    grant_id      BLOB,
    enrollment_id BLOB,
    subject_kind  TEXT,
    subject       TEXT,
    client_id     TEXT,
    jti           TEXT,
    source_ip     TEXT,
    reason        TEXT,
    detail        TEXT NOT NULL
);
-- Newest first, keyset-paginated on (at, id): one index per filter, each ending in time.
CREATE INDEX audit_events_by_time ON audit_events (at, id);
CREATE INDEX audit_events_by_app ON audit_events (app_id, at, id) WHERE app_id IS NOT NULL;
CREATE INDEX audit_events_by_secret ON audit_events (secret_id, at, id) WHERE secret_id IS NOT NULL;
CREATE INDEX audit_events_by_grant ON audit_events (grant_id, at, id) WHERE grant_id IS NOT NULL;
CREATE INDEX audit_events_by_subject ON audit_events (subject, at, id) WHERE subject IS NOT NULL;
CREATE INDEX audit_events_by_event ON audit_events (event, at, id);

-- Tokens issued per credential (kind: app, secret, grant) per UTC day (YYYY-MM-DD).
CREATE TABLE credential_usage (
    kind          TEXT NOT NULL,
    credential_id BLOB NOT NULL,
    day           TEXT NOT NULL,
    issued        INTEGER NOT NULL,
    PRIMARY KEY (kind, credential_id, day)
);
CREATE INDEX credential_usage_by_day ON credential_usage (day);
