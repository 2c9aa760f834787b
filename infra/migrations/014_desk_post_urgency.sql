-- The desk queue of one post in deadline order, one ordered read per post
-- (infra.queries.list_cases_sql): the cases of a post, and the cases escalated to a post,
-- each by the desk deadline (same expression as infra.queries.DESK_DUE) and case_id.
-- Without these the first page of a quiet post walked the database-wide urgency index
-- (cases_desk_due_idx) past every other post's cases: ~2,000 rows at 50,000 cases,
-- ~8,000 at 200,000.
CREATE INDEX IF NOT EXISTS cases_post_desk_due_idx ON cases (
    post_id,
    (CASE WHEN status = 'acknowledged' THEN resolve_due WHEN status <> 'resolved' THEN ack_due END),
    case_id
);
CREATE INDEX IF NOT EXISTS cases_escalated_desk_due_idx ON cases (
    (doc->'detail'->>'escalated_to'),
    (CASE WHEN status = 'acknowledged' THEN resolve_due WHEN status <> 'resolved' THEN ack_due END),
    case_id
) WHERE doc->'detail'->>'escalated_to' IS NOT NULL;
-- A head of mission also sees its consulates' cases from escalation level 1 on: the same
-- order over the escalated cases only (a few percent), not every case of the consulate.
CREATE INDEX IF NOT EXISTS cases_post_escalated_desk_due_idx ON cases (
    post_id,
    (CASE WHEN status = 'acknowledged' THEN resolve_due WHEN status <> 'resolved' THEN ack_due END),
    case_id
) WHERE escalation_level >= 1;
-- The leading column of cases_escalated_desk_due_idx is the whole of migration 013's index, over the escalated cases only.
DROP INDEX IF EXISTS cases_escalated_to_idx;
