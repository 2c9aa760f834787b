-- Escalation and claim facts are typed fields of the case document (handlers.model.Case)
-- instead of keys of its free `detail`: doc.detail.escalated_to, .resolve_deadline_missed
-- and .clock_started_at move to the top of the document under the same names; a
-- claim_dispute case's doc.detail.claim_id becomes doc.claim_id; a deceased worker's
-- doc.detail.jkm {claim_id, due, reminded_at} becomes doc.claim_id, doc.jkm_due and
-- doc.jkm_reminded_at; doc.detail.claim_suggested {program, at} becomes
-- doc.claim_suggested (the program) and doc.claim_suggested_at. The published case JSON
-- (Case.public) still shows them under `detail`, as before.
UPDATE cases
   SET doc = (doc - 'detail')
       || jsonb_build_object(
            'escalated_to', doc->'detail'->'escalated_to',
            'resolve_deadline_missed', doc->'detail'->'resolve_deadline_missed',
            'clock_started_at', doc->'detail'->'clock_started_at',
            'claim_id', COALESCE(doc->'detail'->'jkm'->'claim_id', doc->'detail'->'claim_id'),
            'jkm_due', doc->'detail'->'jkm'->'due',
            'jkm_reminded_at', doc->'detail'->'jkm'->'reminded_at',
            'claim_suggested', doc->'detail'->'claim_suggested'->'program',
            'claim_suggested_at', doc->'detail'->'claim_suggested'->'at')
       || jsonb_build_object('detail',
            (doc->'detail')
            - ARRAY['escalated_to', 'resolve_deadline_missed', 'clock_started_at', 'jkm',
                    'claim_suggested', 'claim_id'])
 WHERE jsonb_typeof(doc->'detail') = 'object'
   AND (doc->'detail') ?| ARRAY['escalated_to', 'resolve_deadline_missed', 'clock_started_at',
                                'jkm', 'claim_suggested', 'claim_id'];

-- The desk queue of a post reads the cases escalated to it by the new key: migration 014's
-- index of the escalated cases in deadline order, on doc->>'escalated_to' now (its leading
-- column also serves the other lookups by escalated_to; migration 013's index is dropped).
DROP INDEX IF EXISTS cases_escalated_to_idx;
DROP INDEX IF EXISTS cases_escalated_desk_due_idx;
CREATE INDEX IF NOT EXISTS cases_escalated_desk_due_idx ON cases (
    (doc->>'escalated_to'),
    (CASE WHEN status = 'acknowledged' THEN resolve_due WHEN status <> 'resolved' THEN ack_due END),
    case_id
) WHERE doc->>'escalated_to' IS NOT NULL;
