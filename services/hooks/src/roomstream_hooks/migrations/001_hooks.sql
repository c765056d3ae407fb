-- Endpoints: configured through the API (source 'api') or the environment (source 'env').
CREATE TABLE hooks_endpoints (
    id          text        PRIMARY KEY,
    url         text        NOT NULL,
    secret      text        NOT NULL,
    kinds       text[]      NOT NULL,
    rooms       text[],                      -- NULL: every room
    source      text        NOT NULL DEFAULT 'api',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The per-endpoint outbox: every event an endpoint subscribes to, in log order (`pos`), until it
-- is delivered (deleted) or dead-lettered (moved). The consumer acknowledges the log once its
-- rows are committed here, so the log never waits on an endpoint.
CREATE TABLE hooks_outbox (
    endpoint_id  text        NOT NULL REFERENCES hooks_endpoints (id) ON DELETE CASCADE,
    pos          bigserial   NOT NULL,
    event_id     text        NOT NULL,
    room         text,
    body         text        NOT NULL,      -- the event's JSON, exactly as it is sent
    enqueued_at  timestamptz NOT NULL DEFAULT now(),
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text,
    PRIMARY KEY (endpoint_id, pos),
    CONSTRAINT hooks_outbox_event UNIQUE (endpoint_id, event_id)
);

-- Events given up on (after the attempt or age bound), listed and replayed through the API.
CREATE TABLE hooks_dead_letters (
    endpoint_id  text        NOT NULL REFERENCES hooks_endpoints (id) ON DELETE CASCADE,
    pos          bigint      NOT NULL,
    event_id     text        NOT NULL,
    room         text,
    body         text        NOT NULL,
    enqueued_at  timestamptz NOT NULL,
    attempts     integer     NOT NULL,
    last_error   text,
    dead_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint_id, pos)
);

-- One delivering instance per endpoint (order per endpoint): a lease renewed by its worker.
CREATE TABLE hooks_leases (
    endpoint_id  text        PRIMARY KEY REFERENCES hooks_endpoints (id) ON DELETE CASCADE,
    owner        text        NOT NULL,
    until        timestamptz NOT NULL
);
