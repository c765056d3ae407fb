"""The kit's service lifecycle (`roomstream_kit.lifecycle`, `roomstream_kit.service`): supervised
tasks that crash are reported and restarted, a stop is bounded even when a task ignores its
cancellation, routes exist before the lifespan runs, `/readyz` follows a real Redis that dies and
comes back, errors are counted by one middleware, the heartbeat outlives a non-Redis error, and
the one retry helper retries only what passes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from roomstream_contracts.errors import ErrorCode
from roomstream_contracts.streams import StreamKeys
from roomstream_kit.http import ApiError, JSONResponse
from roomstream_kit.lifecycle import Lifecycle
from roomstream_kit.node import Heartbeat
from roomstream_kit.retry import Backoff, retry
from roomstream_kit.service import on_state, service_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from tests.conftest import REDIS_URL
from tests.monitor.helpers import wait_for
from tests.support.redis_server import OwnRedis

BOUND_S = 20.0
"""Upper bound on every wait here (a hang fails the test instead of stalling the run)."""


async def until(condition: Callable[[], bool], what: str) -> None:
    async def check() -> bool:
        return condition()

    await wait_for(check, BOUND_S, what)


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan entered, and a client whose requests carry the lifespan state."""
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Any, receive: Any, send: Any) -> None:
            scope["state"] = dict(state or {})
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            yield http


# -- supervised tasks ----------------------------------------------------------------------------


async def test_a_crashing_task_is_reported_then_restarted(caplog: pytest.LogCaptureFixture) -> None:
    life = Lifecycle("test", restart_initial_s=1.0, restart_max_s=1.0)  # 1 s to see it down
    starts = 0
    running_again = asyncio.Event()

    async def flaky() -> None:
        nonlocal starts
        starts += 1
        await asyncio.sleep(0)
        if starts <= 2:
            raise RuntimeError(f"crash {starts}")
        running_again.set()
        await asyncio.Event().wait()

    caplog.set_level(logging.ERROR, "roomstream_kit.lifecycle")
    life.spawn("flaky", flaky)
    sup = life.tasks["flaky"]
    await until(lambda: sup.down, "the first crash")
    assert life.task_problem() == "flaky task is not running"
    assert await life.problems() == ["flaky task is not running"]
    async with asyncio.timeout(BOUND_S):
        await running_again.wait()
    assert sup.crashes == 2 and not sup.down
    assert sup.last_error == "RuntimeError: crash 2"
    assert await life.problems() == []
    assert caplog.text.count("task flaky crashed; restarting") == 2
    await life.stop()
    assert sup.task.cancelled()


async def test_an_essential_task_that_crashes_fails_readiness_for_good() -> None:
    life = Lifecycle("test", restart_initial_s=0.01)

    async def broken() -> None:
        raise RuntimeError("no way to go on")

    async def one_shot() -> None:  # returns: finished, not a problem
        return None

    life.spawn("broken", broken, restart=False)
    life.spawn("one-shot", one_shot)
    await until(lambda: life.tasks["broken"].task.done(), "the crash")
    await until(lambda: life.tasks["one-shot"].task.done(), "the one-shot job")
    assert await life.problems() == ["broken task is not running"]
    await life.stop()


async def test_every_keeps_running_after_a_failed_round() -> None:
    life = Lifecycle("test")
    rounds = 0

    async def job() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise ConnectionError("a dependency is away")

    life.every("job", 0.01, job)
    await until(lambda: rounds >= 3, "three rounds")
    assert await life.problems() == []
    await life.stop()


# -- bounded shutdown ------------------------------------------------------------------------------


async def test_stop_is_bounded_when_a_task_ignores_cancellation() -> None:
    life = Lifecycle("test", task_stop_s=0.2)
    release = asyncio.Event()
    order: list[str] = []

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    async def hangs() -> None:
        await asyncio.Event().wait()

    async def step(name: str) -> None:
        order.append(name)

    life.spawn("stubborn", stubborn)
    life.on_stop("first", lambda: step("first"))
    life.on_stop("hangs", hangs, 0.2)
    life.on_stop("last", lambda: step("last"))
    await asyncio.sleep(0.05)
    async with asyncio.timeout(BOUND_S):
        await life.stop()
    assert order == ["last", "first"]  # reverse order, past the step that hung
    assert not life.tasks["stubborn"].task.done()  # left behind, not waited for
    release.set()
    life.tasks["stubborn"].task.cancel()
    async with asyncio.timeout(BOUND_S):
        await asyncio.gather(life.tasks["stubborn"].task, return_exceptions=True)


async def test_a_failed_start_closes_what_it_opened() -> None:
    closed: list[str] = []

    async def start(life: Lifecycle) -> dict[str, Any]:
        async def close() -> None:
            closed.append("pool")

        life.on_stop("pool close", close)
        raise ConnectionError("redis is not there")

    app = service_app("test", routes=[], start=start)
    with pytest.raises(ConnectionError):
        async with running(app):
            pass
    assert closed == ["pool"]


# -- routes and readiness --------------------------------------------------------------------------


class Api:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def value(self, request: Request) -> Response:
        raw = await self.redis.get("lifecycle-test")
        return JSONResponse({"value": raw.decode() if raw else None})

    async def refuse(self, request: Request) -> Response:
        raise ApiError(ErrorCode.FORBIDDEN, "no")

    async def bug(self, request: Request) -> Response:
        raise RuntimeError("a bug")


ROUTES = [
    Route("/value", on_state("api", Api.value)),
    Route("/refuse", on_state("api", Api.refuse)),
    Route("/bug", on_state("api", Api.bug)),
]


class Recorder:
    """Stands in for an OpenTelemetry counter: what was added, with which attributes."""

    def __init__(self) -> None:
        self.added: list[tuple[int, dict[str, str]]] = []

    def add(self, amount: int, attributes: dict[str, str] | None = None) -> None:
        self.added.append((amount, dict(attributes or {})))


def _matches(app: Starlette, path: str) -> bool:
    scope = {"type": "http", "path": path, "root_path": "", "method": "GET", "headers": []}
    return any(route.matches(scope)[0] == Match.FULL for route in app.routes)


async def test_routes_are_declared_before_the_lifespan_runs() -> None:
    async def start(life: Lifecycle) -> dict[str, Any]:
        raise AssertionError("the lifespan must not run to build the routes")

    app = service_app("test", routes=ROUTES, start=start)
    for path in ("/value", "/refuse", "/healthz", "/readyz", "/metrics"):
        assert _matches(app, path), path
    assert not _matches(app, "/nothing")


def test_every_service_declares_its_api_routes_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real services: their API routes are in the table before any lifespan."""
    from roomstream_history.app import create_app as history_app
    from roomstream_history.settings import HistorySettings
    from roomstream_hooks.app import create_app as hooks_app
    from roomstream_hooks.settings import HooksSettings
    from roomstream_monitor.app import create_app as monitor_app
    from roomstream_monitor.settings import MonitorSettings
    from roomstream_rooms.app import create_app as rooms_app
    from roomstream_rooms.settings import RoomsSettings

    monkeypatch.setenv("ROOMSTREAM_HOOKS_ENDPOINTS", "")
    apps = {
        "/rooms/r1/members": rooms_app(RoomsSettings()),
        "/users/u1/rooms": rooms_app(RoomsSettings()),
        "/rooms/r1/messages": history_app(HistorySettings()),
        "/endpoints": hooks_app(HooksSettings()),
        "/api/stats": monitor_app(MonitorSettings()),
    }
    for path, app in apps.items():
        assert _matches(app, path), path
        assert _matches(app, "/readyz"), path


async def test_readiness_follows_a_redis_that_dies_and_comes_back(own_redis: OwnRedis) -> None:
    errors = Recorder()

    async def start(life: Lifecycle) -> dict[str, Any]:
        redis = Redis.from_url(own_redis.url, socket_timeout=1.0, socket_connect_timeout=1.0)
        life.on_stop("redis close", redis.aclose)
        life.check("redis", redis.ping)
        await redis.set("lifecycle-test", "here")
        return {"redis": redis, "api": Api(redis)}

    app = service_app("test", routes=ROUTES, start=start, errors=errors)  # type: ignore[arg-type]
    async with running(app) as http:
        assert (await http.get("/readyz")).json() == {"status": "ready"}
        assert (await http.get("/value")).json() == {"value": "here"}  # request.state.api
        own_redis.stop()
        r = await http.get("/readyz")
        assert r.status_code == 503
        assert [f.split(":")[0] for f in r.json()["failed"]] == ["redis"]
        r = await http.get("/value")
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
        own_redis.start()

        async def ready() -> bool:
            return (await http.get("/readyz")).status_code == 200

        await wait_for(ready, BOUND_S, "ready again")
        assert (await http.get("/refuse")).status_code == 403
        assert (await http.get("/bug")).status_code == 500
        assert (await http.get("/nothing")).status_code == 404
    codes = [attrs["code"] for _, attrs in errors.added]
    assert codes == ["unavailable", "forbidden", "internal", "not_found"]


async def test_a_check_that_hangs_is_bounded(own_redis: OwnRedis) -> None:
    """A Redis that stops answering (SIGSTOP, no socket timeout on the client): `/readyz` still
    answers, 503, instead of hanging with it."""

    async def start(life: Lifecycle) -> dict[str, Any]:
        redis = Redis.from_url(own_redis.url)  # no socket timeout: a PING would wait forever
        life.on_stop("redis close", redis.aclose, 1.0)
        life.check("redis", redis.ping)
        return {"redis": redis}

    app = service_app("test", routes=[], start=start)
    assert own_redis.proc is not None
    async with running(app) as http:
        assert (await http.get("/readyz")).status_code == 200
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        try:
            async with asyncio.timeout(BOUND_S):
                r = await http.get("/readyz", timeout=BOUND_S)
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        assert r.status_code == 503
        assert r.json()["failed"] == ["redis: TimeoutError()"]


async def test_readyz_before_the_lifespan_is_503() -> None:
    async def start(life: Lifecycle) -> dict[str, Any]:
        return {}

    app = service_app("test", routes=[], start=start)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        r = await http.get("/readyz")
    assert r.status_code == 503 and r.json()["failed"] == ["not started"]


# -- heartbeat and retry ---------------------------------------------------------------------------


async def test_the_heartbeat_outlives_an_error_that_is_not_redis(namespace: str) -> None:
    redis = Redis.from_url(REDIS_URL)
    keys = StreamKeys(namespace=namespace, shards=1)
    calls = 0

    def stats() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("a bug in the stats callback")
        return {"connections": 7}

    beat = Heartbeat(redis, keys, "hb-test", "test", interval_s=0.02, ttl_s=5, stats=stats)
    life = Lifecycle("test")
    life.spawn("heartbeat", beat.run)
    try:

        async def beating() -> bool:
            return bool(await redis.exists(keys.node("hb-test")))

        await wait_for(beating, BOUND_S, "the node record")
        assert calls >= 2
        assert (await redis.hget(keys.node("hb-test"), "connections")) == b"7"
        assert life.tasks["heartbeat"].crashes == 0
    finally:
        await life.stop()
        await beat.deregister()
        assert not await redis.exists(keys.node("hb-test"))
        await redis.aclose()


async def test_retry_retries_only_what_passes() -> None:
    attempts = 0

    async def twice_away() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("away")
        return "done"

    assert await retry(twice_away, what="op", initial_s=0.001) == "done"
    assert attempts == 3

    async def bug() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        await retry(bug, what="op", initial_s=0.001)

    stopping = False

    async def away() -> None:
        nonlocal stopping
        stopping = True
        raise ConnectionError("away")

    with pytest.raises(ConnectionError):  # a stopping caller does not wait for the dependency
        await retry(away, what="op", initial_s=0.001, stop_if=lambda: stopping)


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = Backoff(0.1, 0.5)
    assert [b.next_delay() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    b.reset()
    assert b.next_delay() == 0.1
