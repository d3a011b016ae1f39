-- Issuance quotas (Auth0's M2M token quotas): tokens per app per fixed UTC hour and day.
-- 0 is no quota, which is what every existing app gets (and compares equal in guarded
-- updates, as NULL would not).
ALTER TABLE applications ADD COLUMN tokens_per_hour INTEGER NOT NULL DEFAULT 0;
ALTER TABLE applications ADD COLUMN tokens_per_day INTEGER NOT NULL DEFAULT 0;
-- What each replica has leased of a quota window: one row per (app, window), grown by one
-- conditional upsert that never lets `leased` pass the limit. `last_grant` is what the
-- latest lease got (the upsert's RETURNING sees only the new row). Rows of ended windows
-- are purged by the replicas' housekeeping; no foreign key, so a lease never waits on the
-- app's row.
CREATE TABLE quota_windows (
    app_id     BLOB NOT NULL,
    span       TEXT NOT NULL,
    starts_at  INTEGER NOT NULL,
    leased     INTEGER NOT NULL,
    last_grant INTEGER NOT NULL,
    PRIMARY KEY (app_id, span, starts_at)
);
CREATE INDEX quota_windows_by_start ON quota_windows (starts_at);
-- Requests per minute allowed with an auth grant's tokens on Portcullis's bearer routes
-- (NULL: no limit).
ALTER TABLE auth_grants ADD COLUMN requests_per_minute INTEGER;
