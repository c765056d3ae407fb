"""Plumbing shared by every roomstream service (never wire format: that is `roomstream_contracts`).

- `settings`: the base settings object read from environment variables;
- `auth`: JWT verification and issuing;
- `redis`: Redis client factory (single server or cluster);
- `eventlog`: appending events to the log through the atomic script;
- `consumer`: consumer-group consumption of the log (FastStream) with reclaim of dead consumers;
- `postgres`: asyncpg pool and migrations;
- `http`: Starlette helpers: error bodies, bearer auth, health / readiness / metrics routes;
- `telemetry`: OpenTelemetry metrics (Prometheus text), traces and JSON logs;
- `node`: heartbeat record of a running process;
- `lifecycle`: one process life: supervised background tasks, readiness checks, bounded stop;
- `service`: the Starlette app of every HTTP service, built on a `Lifecycle`;
- `retry`: the one retry / backoff helper;
- `lag`: consumer-group lag and pending from `XINFO GROUPS`.
"""
