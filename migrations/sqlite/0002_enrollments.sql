-- Enrollments: an application installed for an owner; one per (app, owner).
CREATE TABLE enrollments (
    id           BLOB PRIMARY KEY,
    app_id       BLOB NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    owner_id     TEXT NOT NULL,
    data         TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    sandbox      INTEGER NOT NULL,
    disabled     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    UNIQUE (app_id, owner_id)
);

CREATE INDEX enrollments_owner ON enrollments (owner_id);
