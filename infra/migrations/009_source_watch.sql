-- Silent sources (heartbeats): when each expected producer last spoke, and its alert state.
-- One row per (source, input partition): a partition is written by one processor at a time
-- (advisory partition lock), so processors never contend on these rows.
CREATE TABLE IF NOT EXISTS source_seen (
    source        text NOT NULL,
    partition     integer NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    PRIMARY KEY (source, partition)
);

-- The state of each watched source; changed only by the source check under its lock, in
-- the same transaction as the outbox row of the alert the change raises.
CREATE TABLE IF NOT EXISTS source_watch (
    source         text PRIMARY KEY,
    watched_since  timestamptz NOT NULL DEFAULT now(),
    silent         boolean NOT NULL DEFAULT false,
    silent_since   timestamptz,
    episode        integer NOT NULL DEFAULT 0,
    changed_at     timestamptz NOT NULL DEFAULT now()
);
