"""A minimal protocol client over `websockets` for the history tests (PROTOCOL.md)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
import websockets

from tests.conftest import make_token

_refs = itertools.count(1)


class WsClient:
    """One authenticated socket; replies are matched by `ref`, events are queued in order."""

    def __init__(self, ws: Any, welcome: dict[str, Any]) -> None:
        self.ws = ws
        self.welcome = welcome
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, ws_url: str, user: str) -> WsClient:
        ws = await websockets.connect(
            ws_url,
            additional_headers={"authorization": f"Bearer {make_token(user)}"},
            max_size=2**24,
        )
        welcome = orjson.loads(await ws.recv())
        assert welcome["type"] == "welcome", welcome
        return cls(ws, welcome)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = orjson.loads(raw)
                ref = msg.get("ref")
                if ref is not None and ref in self._replies:
                    self._replies.pop(ref).set_result(msg)
                elif msg.get("type") == "event":
                    self.events.put_nowait(msg)
        except websockets.ConnectionClosed:
            pass
        for fut in self._replies.values():
            if not fut.done():
                fut.set_exception(ConnectionError("socket closed"))

    async def call(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Send a command and wait for its reply (`ack`, `error`, `joined`, `history`, …).

        The reply future is registered before sending, so replies cannot be missed.
        """
        ref = f"r{next(_refs)}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[ref] = fut
        await self.ws.send(orjson.dumps({"type": type_, "ref": ref, **fields}).decode())
        return await asyncio.wait_for(fut, 60)

    async def next_event(self, wait_s: float = 30.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.events.get(), wait_s)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
