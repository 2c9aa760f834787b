-- Dead letters keep the original record (key, value, headers) in PostgreSQL only; the
-- dead-letter topic carries a copy with personal identifiers masked and the value capped.
ALTER TABLE deadletters ADD COLUMN IF NOT EXISTS key bytea;
ALTER TABLE deadletters ADD COLUMN IF NOT EXISTS value bytea;
ALTER TABLE deadletters ADD COLUMN IF NOT EXISTS headers jsonb;

-- An outbox row the broker refuses for good (too large, invalid topic...) is parked with the
-- reason: never retried, never in the way of the rows after it.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS parked_at timestamptz;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS park_reason text;
CREATE INDEX IF NOT EXISTS outbox_pending_idx ON outbox (seq)
    WHERE published_at IS NULL AND parked_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_parked_idx ON outbox (seq) WHERE parked_at IS NOT NULL;
