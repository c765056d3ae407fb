"""A real webhook receiver the tests run on 127.0.0.1 (uvicorn on the test's event loop).

It verifies the Standard Webhooks signature of every request (the reference library) and records
what it got. `mode` says how it answers: "ok" (204), "fail" (500), "hang" (never answers). It can
be stopped (connection refused) and started again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.processes import free_port

SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAAAAAAAAAAA="
SECRET_B = "whsec_dGVzdHMtcmVjZWl2ZXItYi1zZWNyZXQtMDEyMzQ1Njc="


@dataclass
class Received:
    msg_id: str
    events: list[dict[str, Any]]


@dataclass
class Receiver:
    secret: str
    port: int = field(default_factory=free_port)
    mode: str = "ok"
    fail_first: int = 0
    """Answer 500 to this many requests before answering as `mode` says."""
    delay_s: float = 0.0
    """Time taken before each answer."""
    batches: list[Received] = field(default_factory=list)
    attempts: list[str] = field(default_factory=list)
    """webhook-id of every request that arrived (verified), answered or not."""
    bad_signatures: int = 0
    dropped: int = 0
    """Requests whose sender disconnected before the answer (not kept)."""
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for b in self.batches for e in b.events]

    def unique_ids(self) -> set[str]:
        return {e["id"] for e in self.events}

    def first_seen(self) -> list[dict[str, Any]]:
        """Every event once (de-duplicated by id), in the order of first arrival."""
        seen: set[str] = set()
        out = []
        for e in self.events:
            if e["id"] not in seen:
                seen.add(e["id"])
                out.append(e)
        return out

    async def verified(self, request: Request) -> bytes | None:
        """The request's body if its signature verifies, else None (counted)."""
        body = await request.body()
        try:
            Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.bad_signatures += 1
            return None
        return body

    async def _hook(self, request: Request) -> Response:
        body = await self.verified(request)
        if body is None:
            return Response(status_code=401)
        msg_id = request.headers["webhook-id"]
        self.attempts.append(msg_id)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
            if await request.is_disconnected():
                # The sender is gone (killed mid-request): it never sees an answer, so this
                # receiver does not keep the batch either (the sender must send it again).
                self.dropped += 1
                return Response(status_code=503)
        if self.fail_first > 0:
            self.fail_first -= 1
            return Response(status_code=500)
        if self.mode == "hang":
            await self._release.wait()
            return Response(status_code=503)
        if self.mode == "fail":
            return Response(status_code=500)
        payload = json.loads(body)
        assert payload["type"] == "events"
        self.batches.append(Received(msg_id, payload["events"]))
        return Response(status_code=204)

    async def start(self) -> Receiver:
        self._release = asyncio.Event()
        app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(200):
            if self._server.started:
                return self
            await asyncio.sleep(0.02)
        raise TimeoutError("receiver did not start")

    async def stop(self) -> None:
        self._release.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)
        self._server = None
        self._task = None
