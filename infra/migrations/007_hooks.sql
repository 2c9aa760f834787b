-- Alerting hooks (design §7): durable deliveries, every attempt, silences, ack links.

-- Receivers come from the GARDA_RECEIVERS file; what the database keeps about them is the
-- state the file cannot hold: disabled (a 410 answer, or an operator).
CREATE TABLE IF NOT EXISTS hook_receivers (
    name             text PRIMARY KEY,
    disabled_at      timestamptz,
    disabled_reason  text,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- One delivery: one POST (retried) to one receiver, listing one or more alerts. Written in
-- the transaction that raised its first alert. delivery_id is the webhook-id.
CREATE TABLE IF NOT EXISTS hook_deliveries (
    delivery_id      text PRIMARY KEY,
    receiver         text NOT NULL,
    group_key        text NOT NULL,          -- case id, else the alert id
    worker_id        text,
    case_id          text,
    status           text NOT NULL DEFAULT 'pending', -- pending | delivered | failed | abandoned
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    lease_until      timestamptz,            -- a dispatcher holds it until then
    leased_by        text,
    body             bytea,                  -- fixed at the first attempt (same on every retry)
    created_at       timestamptz NOT NULL DEFAULT now(),
    first_sent_at    timestamptz,
    delivered_at     timestamptz,
    last_error       text
);
CREATE INDEX IF NOT EXISTS hook_deliveries_due_idx ON hook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS hook_deliveries_case_idx ON hook_deliveries (case_id);
CREATE INDEX IF NOT EXISTS hook_deliveries_group_idx ON hook_deliveries (receiver, group_key)
    WHERE status = 'pending';

-- Every alert meant for a receiver, and what became of it: queued in a delivery, held
-- (inhibited by a critical case), or silenced (by which silence).
CREATE TABLE IF NOT EXISTS hook_alerts (
    receiver         text NOT NULL,
    alert_id         text NOT NULL,          -- the CloudEvent id of the alert
    alert_type       text NOT NULL,
    worker_id        text,
    case_id          text,
    severity         text,
    event            jsonb NOT NULL,         -- the alert's CloudEvent
    disposition      text NOT NULL,          -- queued | held | silenced
    reason           text,
    delivery_id      text REFERENCES hook_deliveries (delivery_id),
    inhibited_by     text,                   -- the critical case holding it
    silence_id       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (receiver, alert_id)
);
CREATE INDEX IF NOT EXISTS hook_alerts_delivery_idx ON hook_alerts (delivery_id);
CREATE INDEX IF NOT EXISTS hook_alerts_held_idx ON hook_alerts (receiver, worker_id)
    WHERE disposition = 'held' AND delivery_id IS NULL;

-- Every HTTP attempt of a delivery.
CREATE TABLE IF NOT EXISTS hook_attempts (
    delivery_id   text NOT NULL REFERENCES hook_deliveries (delivery_id),
    attempt       integer NOT NULL,
    dispatcher    text NOT NULL,
    started_at    timestamptz NOT NULL,
    latency_ms    double precision,
    status_code   integer,
    error         text,
    outcome       text NOT NULL,            -- delivered | retry | failed | disabled
    PRIMARY KEY (delivery_id, attempt)
);

CREATE TABLE IF NOT EXISTS hook_silences (
    silence_id    text PRIMARY KEY,
    matchers      jsonb NOT NULL,
    starts_at     timestamptz NOT NULL DEFAULT now(),
    ends_at       timestamptz NOT NULL,
    author        text NOT NULL,
    reason        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expired_at    timestamptz,              -- set early by an operator
    expired_by    text,
    noticed_at    timestamptz               -- the expiry notice was raised
);

-- Acknowledge links (single case, single use, expiring). The link is signed with the key
-- below; this row makes it single-use and records when it was used.
CREATE TABLE IF NOT EXISTS hook_ack_links (
    link_id       text PRIMARY KEY,         -- delivery id + case id
    case_id       text NOT NULL,
    delivery_id   text NOT NULL,
    receiver      text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz,
    used_event_id text,
    actor         text
);
CREATE INDEX IF NOT EXISTS hook_ack_links_case_idx ON hook_ack_links (case_id);

-- Signing keys Garda makes for itself (the ack-link key), created once.
CREATE TABLE IF NOT EXISTS hook_keys (
    name        text PRIMARY KEY,
    key         bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
