-- Enrollments: an application installed for an owner; one per (app, owner).
CREATE TABLE enrollments (
    id           UUID PRIMARY KEY,
    app_id       UUID NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    owner_id     TEXT NOT NULL,
    data         JSONB NOT NULL,
    scopes       TEXT NOT NULL,
    sandbox      BOOLEAN NOT NULL,
    disabled     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    UNIQUE (app_id, owner_id)
);

CREATE INDEX enrollments_owner ON enrollments (owner_id);
