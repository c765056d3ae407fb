"""A load-generator process of `roomstream bench-connects`: many bare sockets on one event loop.

Bare `websockets` clients (no `roomstream_client.Client`: its per-client tasks and sequencer
would make the load generator, not the gateway, the limit at 10,000+ sockets on 2 cores). Each
socket authenticates with a header token, waits for `welcome`, and keeps the last seq it saw of
every room (welcome, `joined`, `event` frames) so that a reconnect can resume with `since`.

JSON lines with the orchestrator: config on stdin, then one phase per line:
- `{"phase": "connect"}`: open every socket (`--concurrency` at a time), `join` its room; reply
  `{"done": N, "elapsed_s", "retries", "errors"}`;
- `{"phase": "reconnect"}`: drop every socket at once (TCP abort, as a crash or a network cut
  does), reconnect them all, resume each room with `join since=LAST`; reply as above plus
  `"missed"` (event frames received by the resumes);
- `{"phase": "close"}`: close every socket; reply `{"closed": N}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from roomstream_kit.auth import issue_token
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .plumbing import emit, run_loop, stdin_reader

RETRY_S = 0.2


@dataclass(slots=True)
class Sock:
    """One bench socket: its user's token, room, connection and last seqs."""

    url: str
    token: str
    room: str
    ws: ClientConnection | None = None
    last: dict[str, int] = field(default_factory=dict)
    waiter: asyncio.Future[dict[str, Any]] | None = None
    reader: asyncio.Task[None] | None = None
    events: int = 0


@dataclass(slots=True)
class Tally:
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, exc: BaseException) -> None:
        name = type(exc).__name__
        if isinstance(exc, ConnectionClosed) and exc.rcvd is not None:
            name = f"close {exc.rcvd.code}"
        elif isinstance(exc, InvalidStatus):
            name = f"http {exc.response.status_code}"
        self.errors[name] = self.errors.get(name, 0) + 1
        self.retries += 1


async def _drain(sock: Sock, ws: ClientConnection) -> None:
    """Read every frame of `ws`: track seqs, hand `joined` to the waiter."""
    with contextlib.suppress(ConnectionClosed):
        async for raw in ws:
            msg = orjson.loads(raw)
            kind = msg.get("type")
            if kind == "event":
                seq = msg.get("seq")  # presence and typing events carry none
                if seq is not None:
                    sock.last[msg["room"]] = max(seq, sock.last.get(msg["room"], 0))
                    sock.events += 1
            elif kind == "joined" and msg["room"] not in sock.last:
                sock.last[msg["room"]] = msg["seq"]
            waiter = sock.waiter
            if kind in ("joined", "error") and waiter is not None and not waiter.done():
                waiter.set_result(msg)


async def _open(sock: Sock, tally: Tally, resume: bool) -> None:
    """Connect until welcomed, then join (with `since` when resuming) until `joined`."""
    while True:
        try:
            ws = await connect(
                sock.url,
                additional_headers={"Authorization": f"Bearer {sock.token}"},
                compression=None,
                open_timeout=120,
                ping_interval=None,
                max_size=None,
                user_agent_header="roomstream-bench",
            )
        except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as exc:
            tally.error(exc)
            await asyncio.sleep(RETRY_S)
            continue
        try:
            welcome = orjson.loads(await asyncio.wait_for(ws.recv(decode=False), 120))
            if welcome.get("type") != "welcome":
                raise InvalidHandshake(f"no welcome: {welcome}")
            for room, pos in welcome["rooms"].items():
                if not resume or room not in sock.last:
                    sock.last[room] = int(pos["seq"])
            since = sock.last.get(sock.room) if resume else None
            loop = asyncio.get_running_loop()
            sock.waiter = loop.create_future()
            sock.reader = asyncio.ensure_future(_drain(sock, ws))
            join: dict[str, Any] = {"type": "join", "room": sock.room, "ref": "j"}
            if since is not None:
                join["since"] = since
            await ws.send(orjson.dumps(join).decode())
            reply = await asyncio.wait_for(asyncio.shield(sock.waiter), 120)
            if reply.get("type") != "joined":
                raise InvalidHandshake(f"join refused: {reply}")
            sock.ws = ws
            sock.waiter = None
            return
        except (ConnectionClosed, InvalidHandshake, TimeoutError, OSError) as exc:
            tally.error(exc)
            ws.transport.abort()
            await asyncio.sleep(RETRY_S)


async def _phase(socks: list[Sock], concurrency: int, resume: bool) -> dict[str, Any]:
    tally = Tally()
    gate = asyncio.Semaphore(concurrency)
    events_before = sum(s.events for s in socks)

    async def one(sock: Sock) -> None:
        async with gate:
            await _open(sock, tally, resume)

    start = time.monotonic()
    await asyncio.gather(*(one(s) for s in socks))
    elapsed = time.monotonic() - start
    return {
        "done": len(socks),
        "elapsed_s": elapsed,
        "retries": tally.retries,
        "errors": tally.errors,
        "missed": sum(s.events for s in socks) - events_before,
    }


async def _main() -> None:
    reader = await stdin_reader(limit=64 * 1024 * 1024)
    config = orjson.loads(await reader.readline())
    urls: list[str] = config["urls"]
    rooms: list[str] = config["rooms"]
    socks = [
        Sock(
            urls[i % len(urls)],
            issue_token(config["secret"], f"{config['user_prefix']}-u{i}", ttl_s=24 * 3600),
            rooms[i % len(rooms)],
        )
        for i in config["indices"]
    ]
    concurrency = int(config["concurrency"])
    emit({"ready": len(socks)})
    while line := await reader.readline():
        phase = orjson.loads(line)["phase"]
        if phase == "connect":
            emit(await _phase(socks, concurrency, resume=False))
            gc.collect()
            gc.freeze()
        elif phase == "reconnect":
            for s in socks:
                if s.ws is not None:
                    s.ws.transport.abort()
                    s.ws = None
            await asyncio.sleep(0.05)
            emit(await _phase(socks, concurrency, resume=True))
        elif phase == "close":
            closing = [s.ws.close() for s in socks if s.ws is not None]
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), 60)
            emit({"closed": len(closing)})
            return


def main() -> None:
    run_loop(_main())


if __name__ == "__main__":
    main()
