-- outbox_unpublished_idx (seq WHERE published_at IS NULL) is outbox_pending_idx without the
-- parked rows, which are few and found by their own index: the relay, its sweep and the
-- stats read the pending index. Every outbox insert paid for both (about 3 µs per row of the
-- ~1.75 rows a live event writes, measured on the embedded PostgreSQL).
DROP INDEX IF EXISTS outbox_unpublished_idx;
