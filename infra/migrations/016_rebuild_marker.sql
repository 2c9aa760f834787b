-- A garda rebuild in progress (or interrupted): at most one row, written when a rebuild
-- starts and deleted when it finished. While it is there the read model is not one (the
-- rebuild writes a worker's rows only when it leaves its cache or at the end), so
-- `garda worker` refuses to start on the database and `garda rebuild` asks for --force.
CREATE TABLE IF NOT EXISTS rebuild_in_progress (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    started_at timestamptz NOT NULL DEFAULT now()
);
