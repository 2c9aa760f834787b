-- Retention (garda prune): each table is pruned oldest-first by its age column, in chunks,
-- so each needs an index on it. Published outbox rows only: unpublished ones are kept.
CREATE INDEX IF NOT EXISTS outbox_published_idx ON outbox (published_at)
    WHERE published_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS deadletters_received_idx ON deadletters (received_at);
CREATE INDEX IF NOT EXISTS audit_log_at_idx ON audit_log (at);
CREATE INDEX IF NOT EXISTS processed_events_processed_idx ON processed_events (processed_at);
