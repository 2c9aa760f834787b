-- Retention of the alerting hooks (garda prune): finished deliveries by when they finished,
-- silenced alerts by when they were recorded, acknowledge links by when they were used or
-- expired. Pending deliveries and held alerts are not in these indexes: they are never pruned.
CREATE INDEX IF NOT EXISTS hook_deliveries_done_idx
    ON hook_deliveries ((coalesce(delivered_at, created_at)))
    WHERE status <> 'pending';
CREATE INDEX IF NOT EXISTS hook_alerts_silenced_idx ON hook_alerts (created_at)
    WHERE disposition = 'silenced' AND delivery_id IS NULL;
CREATE INDEX IF NOT EXISTS hook_ack_links_over_idx
    ON hook_ack_links ((coalesce(used_at, expires_at)));
