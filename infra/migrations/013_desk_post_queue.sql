-- The desk queue of one post: a post's token sees its own cases (post_id, served by
-- cases_post_status_idx) and the cases escalated to it (doc.detail.escalated_to, which had
-- no index). Without this one the planner could not combine the two (BitmapOr) and read the
-- whole urgency index, or the whole table, to fill the first page of a post with few cases.
CREATE INDEX IF NOT EXISTS cases_escalated_to_idx ON cases ((doc->'detail'->>'escalated_to'));
