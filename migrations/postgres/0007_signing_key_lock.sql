-- Every decision about which signing key is current or next (first start, rotation) writes
-- this one row first, in its own transaction: the row stays locked until commit, so those
-- decisions take turns across replicas and each one reads the outcome of the one before.
CREATE TABLE signing_key_lock (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    taken_at TIMESTAMPTZ NOT NULL
);
