"""A real publish-hook endpoint the tests run on 127.0.0.1 (the webhooks tests' uvicorn receiver,
answering verdicts instead of storing event batches).

Every request's Standard Webhooks signature is verified with the reference library; `asks` keeps
the verified request bodies. `decide(ask)` returns the verdict (a JSON-able dict, or None for an
empty 204); `delay_s` holds each answer (a hook slower than the gateway's timeout), and so does
a cleared `gate` until it is set again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.hooks.receiver import Receiver


def _open_gate() -> asyncio.Event:
    gate = asyncio.Event()
    gate.set()
    return gate


def allow(ask: dict[str, Any]) -> dict[str, Any] | None:
    return {"action": "allow"}


@dataclass
class HookReceiver(Receiver):
    decide: Callable[[dict[str, Any]], dict[str, Any] | None] = allow
    asks: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=_open_gate)

    async def _hook(self, request: Request) -> Response:
        body = await self.verified(request)
        if body is None:
            return Response(status_code=401)
        ask = json.loads(body)
        self.asks.append(ask)
        self.headers.append(dict(request.headers))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        await self.gate.wait()
        verdict = self.decide(ask)
        if verdict is None:
            return Response(status_code=204)
        return JSONResponse(verdict)

    async def stop(self) -> None:
        self.gate.set()
        await super().stop()
