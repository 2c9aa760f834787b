-- Bearer tokens scoped to posts or headquarters (design §6), stored hashed.
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id     text PRIMARY KEY,            -- public id (shown in lists, used to revoke)
    token_hash   text NOT NULL UNIQUE,        -- sha256 of the secret token
    posts        text[] NOT NULL DEFAULT '{}',
    hq           boolean NOT NULL DEFAULT false,
    label        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

-- Every write through the API, who and what.
CREATE TABLE IF NOT EXISTS audit_log (
    seq         bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    token_id    text,
    method      text NOT NULL,
    path        text NOT NULL,
    status      integer NOT NULL,
    event_id    text,
    detail      jsonb NOT NULL DEFAULT '{}'
);
