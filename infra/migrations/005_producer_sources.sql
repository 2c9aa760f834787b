-- Producer bindings: the CloudEvents sources a token may publish as (POST /api/events).
ALTER TABLE api_tokens ADD COLUMN IF NOT EXISTS sources text[] NOT NULL DEFAULT '{}';

-- A digest of each processed event's content, so that the same (source, id) with other
-- content is a visible conflict (dead-lettered), not a silent duplicate. NULL for events
-- processed before this migration: they are compared by id only.
ALTER TABLE processed_events ADD COLUMN IF NOT EXISTS digest text;
