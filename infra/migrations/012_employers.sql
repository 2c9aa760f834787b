-- Employer watchlist and agency scorecard (prevention and aftercare): cross-worker state,
-- written in the processors' batch transactions (infra.employers).

CREATE TABLE IF NOT EXISTS employers (
    employer_key   text PRIMARY KEY,         -- EMP-<hex>: normalised name + country
    name           text NOT NULL,            -- the normalised name
    country        text NOT NULL,
    region         text,                     -- the latest region a departure/arrival gave
    watchlisted    boolean NOT NULL DEFAULT false,
    watchlisted_at timestamptz,
    cases          text[] NOT NULL DEFAULT '{}',  -- the case ids behind the listing
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS employers_watchlisted_idx ON employers (country) WHERE watchlisted;

-- A case linked to the employer the worker was placed with when it opened.
CREATE TABLE IF NOT EXISTS employer_cases (
    case_id        text PRIMARY KEY,
    employer_key   text NOT NULL,
    worker_id      text NOT NULL,
    category       text,
    severity       text,
    status         text NOT NULL,
    substantiated  boolean,
    opened_at      timestamptz NOT NULL,
    resolved_at    timestamptz
);
CREATE INDEX IF NOT EXISTS employer_cases_employer_idx ON employer_cases (employer_key);

-- One row per journey with a placement agency licence (the scorecard's placements).
CREATE TABLE IF NOT EXISTS agency_placements (
    worker_id      text NOT NULL,
    departed_at    timestamptz NOT NULL,
    license        text NOT NULL,
    country        text,
    non_procedural boolean NOT NULL DEFAULT false,
    PRIMARY KEY (worker_id, departed_at)
);
CREATE INDEX IF NOT EXISTS agency_placements_license_idx ON agency_placements (license, departed_at);
