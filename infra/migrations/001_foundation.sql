-- Garda read model and processing state (design §8).
CREATE TABLE IF NOT EXISTS workers (
    worker_id       text PRIMARY KEY,
    state           text,
    country         text,
    region          text,
    in_crisis       boolean NOT NULL DEFAULT false,
    non_procedural  boolean NOT NULL DEFAULT false,
    insured_until   timestamptz,
    partition       integer,
    doc             jsonb NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS cases (
    case_id           text PRIMARY KEY,
    worker_id         text NOT NULL,
    kind              text NOT NULL,
    category          text,
    severity          text NOT NULL,
    status            text NOT NULL,
    post_id           text NOT NULL,
    escalation_level  integer NOT NULL DEFAULT 0,
    ack_due           timestamptz,
    resolve_due       timestamptz,
    opened_at         timestamptz NOT NULL,
    reports           integer NOT NULL DEFAULT 1,
    next_due          timestamptz,          -- the next escalation deadline (NULL: none)
    partition         integer,              -- the input partition that owns this worker
    doc               jsonb NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS cases_worker_idx ON cases (worker_id);
CREATE INDEX IF NOT EXISTS cases_post_status_idx ON cases (post_id, status);
CREATE INDEX IF NOT EXISTS cases_next_due_idx ON cases (partition, next_due) WHERE next_due IS NOT NULL;

CREATE TABLE IF NOT EXISTS claims (
    claim_id        text PRIMARY KEY,
    worker_id       text NOT NULL,
    status          text NOT NULL,
    last_change_at  timestamptz,
    stall_due       timestamptz,          -- when the claim stalls if nothing changes
    partition       integer,
    doc             jsonb NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS claims_worker_idx ON claims (worker_id);
CREATE INDEX IF NOT EXISTS claims_stall_idx ON claims (partition, stall_due) WHERE stall_due IS NOT NULL;

-- The case timeline is an append-only audit trail.
CREATE TABLE IF NOT EXISTS case_timeline (
    seq          bigserial PRIMARY KEY,
    entry_id     text NOT NULL UNIQUE,
    case_id      text NOT NULL,
    at           timestamptz NOT NULL,
    type         text NOT NULL,
    actor        text,
    detail       jsonb NOT NULL DEFAULT '{}',
    source       text,
    event_id     text,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS case_timeline_case_idx ON case_timeline (case_id, seq);

CREATE OR REPLACE FUNCTION garda_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'case_timeline is append-only';
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS case_timeline_append_only ON case_timeline;
CREATE TRIGGER case_timeline_append_only BEFORE UPDATE OR DELETE ON case_timeline
    FOR EACH ROW EXECUTE FUNCTION garda_append_only();

-- Idempotency: every input event (source, id) is handled once.
CREATE TABLE IF NOT EXISTS processed_events (
    source        text NOT NULL,
    id            text NOT NULL,
    type          text NOT NULL,
    worker_id     text,
    topic         text,
    partition     integer,
    "offset"      bigint,
    outcome       text,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, id)
);

-- Every rejected input, once per (topic, partition, offset).
CREATE TABLE IF NOT EXISTS deadletters (
    seq           bigserial PRIMARY KEY,
    topic         text NOT NULL,
    partition     integer NOT NULL,
    "offset"      bigint NOT NULL,
    error         text NOT NULL,
    source        text,
    event_id      text,
    received_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, partition, "offset")
);

-- Transactional outbox: what must reach Kafka, written with the state that caused it.
CREATE TABLE IF NOT EXISTS outbox (
    seq           bigserial PRIMARY KEY,
    event_id      text NOT NULL UNIQUE,
    topic         text NOT NULL,
    key           bytea,
    value         bytea NOT NULL,
    headers       jsonb NOT NULL DEFAULT '[]',
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unpublished_idx ON outbox (seq) WHERE published_at IS NULL;
