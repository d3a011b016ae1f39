-- Every decision about which signing key is current or next (first start, rotation) writes
-- this one row first, in its own transaction. SQLite has one writer at a time, so writing
-- before reading makes those decisions take turns, each reading the outcome of the one before.
CREATE TABLE signing_key_lock (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    taken_at INTEGER NOT NULL
);
