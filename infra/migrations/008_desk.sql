-- The desk (web page): server-side sessions, and the indexes its queue and live feed use.

-- A session is a bearer token exchanged once at sign-in. Only the SHA-256 of the session
-- id (the cookie) is stored; the token's scope is looked up on every request, so revoking
-- the token ends its sessions too.
CREATE TABLE IF NOT EXISTS desk_sessions (
    session_hash  text PRIMARY KEY,
    token_id      text NOT NULL REFERENCES api_tokens (token_id),
    csrf          text NOT NULL,               -- sent back by the page on every write
    actor         text NOT NULL,               -- the officer id the page acts as
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,        -- absolute end (idle end: last_seen_at + idle)
    ended_at      timestamptz                  -- signed out
);
CREATE INDEX IF NOT EXISTS desk_sessions_token_idx ON desk_sessions (token_id);

-- The queue: open cases by their desk deadline (acknowledged: resolve_due; otherwise
-- ack_due), keyset-paged on (deadline, case_id). Same expression as infra.queries.DESK_DUE.
CREATE INDEX IF NOT EXISTS cases_desk_due_idx ON cases (
    (CASE WHEN status = 'acknowledged' THEN resolve_due WHEN status <> 'resolved' THEN ack_due END),
    case_id
);
-- Search by case or worker id prefix.
CREATE INDEX IF NOT EXISTS cases_case_id_prefix_idx ON cases (case_id text_pattern_ops);
CREATE INDEX IF NOT EXISTS cases_worker_id_prefix_idx ON cases (worker_id text_pattern_ops);
-- The live feed reads what changed since its last look.
CREATE INDEX IF NOT EXISTS cases_updated_idx ON cases (updated_at);
