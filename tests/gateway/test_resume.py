"""Resumes with real processes (issue 9 items 4 and 5): no duplicate and no gap across hundreds
of resumes while two gateways restart in turn under traffic; a resume converges once a stalled
history service answers again, with a 20-entry recent buffer."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from typing import Any

import orjson
from roomstream_contracts.events import Envelope, EventKind, MessageData
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_kit.eventlog import EventLog, RoomCheck
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.gateway.helpers import create_room, keys, open_ws, recv

GATEWAY = "roomstream_gateway"
ROOM = "main"


async def _writer(log: EventLog, stop: asyncio.Event, pause_s: float) -> None:
    """Messages straight into the log, as a busy room gets them from other gateways."""
    while not stop.is_set():
        env = Envelope(
            id=new_event_id(),
            kind=EventKind.MESSAGE,
            room=ROOM,
            user="writer",
            ts=now_ms(),
            data=MessageData(text="x", client_id=new_event_id()).model_dump(),
        )
        with contextlib.suppress(Exception):
            await log.append(env, room_check=RoomCheck.EXISTS)
        await asyncio.sleep(pause_s)


class Resumer:
    """A raw client that reconnects and resumes with `join since` again and again, checking
    every connection's frames: each seq at most once; before `joined` only seqs above the
    welcome's; after it the missed events from since+1 then live ones, increasing."""

    def __init__(self, user: str, urls: list[str]) -> None:
        self.user = user
        self.urls = urls
        self.have: set[int] = set()
        self.resumes = 0
        self.problems: list[str] = []
        self.log: list[Any] = []

    def last(self) -> int:
        n = 0
        while n + 1 in self.have:
            n += 1
        return n

    async def once(self, url: str, stay_s: float) -> None:
        ws = await open_ws(url, self.user)
        try:
            welcome = await recv(ws, 10)
            assert welcome["type"] == "welcome", welcome
            w_seq = welcome["rooms"][ROOM]["seq"]
            since = self.last()
            await ws.send(orjson.dumps({"type": "join", "room": ROOM, "since": since}).decode())
            seen: list[int] = []
            joined: dict[str, Any] | None = None
            after: list[int] = []
            deadline = time.monotonic() + stay_s
            while True:
                try:
                    frame = await recv(ws, max(0.05, deadline - time.monotonic()))
                except TimeoutError:
                    if joined is None and time.monotonic() < deadline + 15:
                        continue  # a far-behind replay pages through history: wait for it
                    if joined is None or len(after) >= joined["missed"]:
                        break
                    continue
                if frame["type"] == "joined":
                    joined = frame
                    self.log.append((since, w_seq, frame))
                    self.resumes += 1
                elif frame["type"] == "error":
                    self.problems.append(f"error {frame}")
                elif frame["type"] == "event" and frame["room"] == ROOM:
                    seq = frame["seq"]
                    if seq in seen:
                        self.problems.append(f"duplicate {seq} (welcome {w_seq}, since {since})")
                    seen.append(seq)
                    if joined is None and seq <= w_seq:
                        self.problems.append(f"live {seq} at or below welcome {w_seq}")
                    if joined is not None:
                        after.append(seq)
                    self.have.add(seq)
                if (
                    time.monotonic() > deadline
                    and joined is not None
                    and len(after) >= joined["missed"]
                ):
                    break
            if joined is not None:
                missed = after[: joined["missed"]]
                if missed != list(range(since + 1, since + 1 + len(missed))):
                    self.problems.append(f"missed {missed} after since {since}")
                if after != sorted(after):
                    self.problems.append(f"out of order after joined: {after}")
        finally:
            with contextlib.suppress(Exception):
                await ws.close()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            url = random.choice(self.urls)
            with contextlib.suppress(ConnectionClosed, OSError, InvalidStatus, TimeoutError):
                await self.once(url, random.uniform(0.02, 0.15))
            await asyncio.sleep(0.02)


async def test_no_duplicate_and_no_gap_across_200_resumes_under_rolling_restarts(
    cluster, namespace, redis_client
):
    users = [f"r{i}" for i in range(12)]
    await create_room(redis_client, namespace, ROOM, "writer", members=users)
    history = cluster.start("roomstream_history")  # for clients that fell far behind
    env = {"ROOMSTREAM_HISTORY_URL": history.url}
    gws = [cluster.start(GATEWAY, env=env), cluster.start(GATEWAY, env=env)]
    log = EventLog(redis_client, keys(namespace))
    stop = asyncio.Event()
    writers = [asyncio.create_task(_writer(log, stop, 0.004)) for _ in range(2)]
    resumers = [Resumer(u, [g.ws_url for g in gws]) for u in users]
    tasks = [asyncio.create_task(r.run(stop)) for r in resumers]
    try:
        started = time.monotonic()
        turn = 0
        while (
            sum(r.resumes for r in resumers) < 200 or turn < 2
        ) and time.monotonic() - started < 50:
            await asyncio.sleep(1.5)
            gw = gws[turn % 2]  # a rolling restart: one gateway at a time
            code = await asyncio.to_thread(gw.terminate, 40)
            assert code == 0, gw.tail()
            await asyncio.to_thread(gw.start)
            turn += 1
    finally:
        stop.set()
        await asyncio.gather(*writers, *tasks, return_exceptions=True)
    total = sum(r.resumes for r in resumers)
    assert total >= 200, total
    assert turn >= 2
    problems = [p for r in resumers for p in r.problems]
    assert not problems, problems[:10]
    # No gap: one last resume of each client catches up to the room's end.
    top = int(await redis_client.hget(keys(namespace).seq(keys(namespace).room_shard(ROOM)), ROOM))
    for r in resumers:
        for _ in range(5):  # a far-behind client's replay pages through history: give it time
            if r.last() >= top:
                break
            await r.once(gws[0].ws_url, 3.0)
        assert not r.problems, r.problems[:10]
        missing = [s for s in range(2, top + 1) if s not in r.have]
        assert not missing, (r.user, r.last(), top, len(missing), missing[:5], r.log[-3:])


async def test_resume_converges_after_a_history_stall_with_a_small_recent_buffer(
    cluster, namespace, redis_client
):
    env = {"ROOMSTREAM_RECENT_PER_ROOM": "20", "ROOMSTREAM_HTTP_TIMEOUT_S": "1"}
    cluster.env.update(env)
    await create_room(redis_client, namespace, ROOM, "writer", members=["bob"])
    history = cluster.start("roomstream_history")
    gw_env = {"ROOMSTREAM_HISTORY_URL": history.url}
    gws = [cluster.start(GATEWAY, env=gw_env), cluster.start(GATEWAY, env=gw_env)]
    log = EventLog(redis_client, keys(namespace), recent_per_room=20)
    bob = Resumer("bob", [gws[0].ws_url])
    stop = asyncio.Event()
    writer = asyncio.create_task(_writer(log, stop, 0.02))
    try:
        await bob.once(gws[0].ws_url, 0.5)
        assert bob.resumes == 1 and not bob.problems
        assert history.proc is not None
        history.proc.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(1.5)  # the recent buffer moves past bob's position
            for gw in gws:  # the gateways restart while history is stalled
                assert await asyncio.to_thread(gw.terminate, 15) == 0
                await asyncio.to_thread(gw.start)
            # One socket: its resume fails (history does not answer) while live events keep
            # coming, more than the recent buffer holds.
            ws = await open_ws(gws[1].ws_url, "bob")
            welcome = await recv(ws, 10)
            assert welcome["type"] == "welcome"
            since = bob.last()
            seen: list[int] = []

            async def read(within_s: float, until_reply: bool) -> dict[str, Any] | None:
                end = time.monotonic() + within_s
                while time.monotonic() < end:
                    try:
                        frame = await recv(ws, max(0.05, end - time.monotonic()))
                    except TimeoutError:
                        break
                    if frame["type"] == "event" and frame["room"] == ROOM:
                        seen.append(frame["seq"])
                    elif until_reply and frame["type"] in ("joined", "error"):
                        return frame
                return None

            async def attempt() -> dict[str, Any] | None:
                await ws.send(orjson.dumps({"type": "join", "room": ROOM, "since": since}).decode())
                return await read(10, True)

            reply = await attempt()
            assert reply is not None and reply.get("code") == "unavailable", reply
            await read(1.5, False)
        finally:
            history.proc.send_signal(signal.SIGCONT)
        # The same socket retries: it must converge once history answers again.
        joined = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            reply = await attempt()
            if reply is not None and reply["type"] == "joined":
                joined = reply
                break
            await read(0.5, False)
        assert joined is not None, "the resume did not converge after history came back"
        await read(1.0, False)
        assert len(seen) == len(set(seen)), [s for s in seen if seen.count(s) > 1][:10]
        missing = [n for n in range(since + 1, max(seen) + 1) if n not in seen]
        assert not missing, missing[:20]
        await ws.close()
    finally:
        stop.set()
        await writer
