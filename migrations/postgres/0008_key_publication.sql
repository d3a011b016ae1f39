-- A grant's API token lives until its grant expires, which may be later than a retired key
-- normally stays published. The key that signs such a token records here how long it must
-- stay published, before it signs.
ALTER TABLE signing_keys ADD COLUMN tokens_live_until TIMESTAMPTZ;
