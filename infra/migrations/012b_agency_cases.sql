-- Agency (P3MI) scorecard: the cases attributed to a placement agency's licence (the
-- departure of the journey the case opened in), written in the processors' batch
-- transactions (infra.agencies). Placements are in agency_placements (012_employers.sql).

CREATE TABLE IF NOT EXISTS agency_cases (
    case_id      text PRIMARY KEY,
    license      text NOT NULL,
    worker_id    text NOT NULL,
    kind         text NOT NULL,
    category     text,
    severity     text NOT NULL,
    status       text NOT NULL,
    opened_at    timestamptz NOT NULL,
    resolved_at  timestamptz
);
CREATE INDEX IF NOT EXISTS agency_cases_license_idx ON agency_cases (license, opened_at);
