"""The Python client against real gateway processes: two-gateway delivery, idempotent send,
fatal close codes, and SIGKILL failover with resume from Redis (no gap, no duplicate)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis.asyncio as aioredis
from roomstream_client import Client, CommandError, ConnectionClosedFatal, Event

from tests.client.helpers import make_room, wait_until
from tests.conftest import Cluster, make_token
from tests.support.processes import free_port

GATEWAY = "roomstream_gateway"


class Collector:
    """Reads a client's events() in the background."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: list[Event] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.client.events():
            self.events.append(event)

    def sequenced(self, room: str) -> list[int]:
        return [
            e.seq for e in self.events if e.type == "event" and e.room == room and e.seq is not None
        ]

    def message_ids(self, room: str) -> list[str]:
        return [
            e.data["client_id"]
            for e in self.events
            if e.type == "event" and e.room == room and e.kind == "message"
        ]

    async def stop(self) -> None:
        await self.client.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.task, 10)


def start_gateway(cluster: Cluster, node: str) -> str:
    proc = cluster.start(GATEWAY, env={"ROOMSTREAM_NODE_ID": node}, name=node)
    return proc.ws_url


async def test_two_gateways_deliver_in_order_exactly_once_and_send_is_idempotent(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    url_a = start_gateway(cluster, "gw-a")
    url_b = start_gateway(cluster, "gw-b")
    await make_room(redis_client, namespace, "lobby", "ann", ["ann", "ben", "cat"])
    ann = Collector(Client(url_a, make_token("ann")))
    ben = Collector(Client(url_b, make_token("ben")))
    cat = Collector(Client([url_b, url_a], make_token("cat"), first_frame_auth=True))
    try:
        for c in (ann, ben, cat):
            welcome = await c.client.connect()
            # Members are subscribed at welcome; the client follows the room from there.
            assert "lobby" in welcome.rooms
            assert c.client.last_seq("lobby") == welcome.rooms["lobby"].seq
        acks = [await ann.client.send("lobby", f"m{i}", id=f"ann-{i}") for i in range(20)]
        seqs = [a.seq for a in acks]
        assert all(s is not None for s in seqs)
        assert seqs == sorted(seqs) and len(set(seqs)) == 20
        # A retried send (same id) returns the same ack and appends nothing.
        again = await ann.client.send("lobby", "m0", id="ann-0")
        assert (again.seq, again.id) == (acks[0].seq, acks[0].id)
        last = seqs[-1]
        for c in (ann, ben, cat):
            await wait_until(
                lambda c=c: bool(c.sequenced("lobby")) and c.sequenced("lobby")[-1] >= last,
                f"{c.client.welcome and c.client.welcome.user} receives seq {last}",
            )
        # One more message proves nothing was appended for the retry.
        final = await ben.client.send("lobby", "after", id="ben-1")
        assert final.seq == last + 1
        for c in (ann, ben, cat):
            await wait_until(lambda c=c: c.sequenced("lobby")[-1] == last + 1, "final message")
            got = c.sequenced("lobby")
            assert got == list(range(got[0], got[-1] + 1)), "in order, no gap, no duplicate"
            assert c.message_ids("lobby") == [f"ann-{i}" for i in range(20)] + ["ben-1"]
        assert (await ann.client.ping()).type == "pong"
    finally:
        for c in (ann, ben, cat):
            await c.stop()


async def test_fatal_close_codes_are_raised_not_retried(cluster: Cluster) -> None:
    url = start_gateway(cluster, "gw-solo")
    with pytest.raises(ConnectionClosedFatal) as bad:
        await Client(url, "not-a-jwt").connect()
    assert bad.value.code == 4401
    with pytest.raises(ConnectionClosedFatal) as expired:
        await Client(url, make_token("old", ttl_s=-10)).connect()
    assert expired.value.code == 4401
    # A command error keeps the session open.
    async with Client(url, make_token("dan")) as dan:
        with pytest.raises(CommandError) as missing:
            await dan.join("no-such-room")
        assert missing.value.code == "not_found"
        with pytest.raises(CommandError) as not_joined:
            await dan.send("no-such-room", "hello")
        assert not_joined.value.code in ("forbidden", "not_found")
        assert (await dan.ping()).type == "pong"


async def test_sigkill_failover_resumes_without_gap_or_duplicate(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    url_a = start_gateway(cluster, "gw-a")
    url_b = start_gateway(cluster, "gw-b")
    gw_a = cluster.procs[0]
    users = [f"u{i}" for i in range(8)]
    await make_room(redis_client, namespace, "ops", "u0", users)
    # u0-u3 start on A (with B as the fallback), u4-u7 on B.
    collectors = [
        Collector(Client([url_a, url_b] if i < 4 else [url_b, url_a], make_token(user)))
        for i, user in enumerate(users)
    ]
    for c in collectors:
        await c.client.connect()
    assert [c.client.url for c in collectors] == [url_a] * 4 + [url_b] * 4

    acked: dict[str, int] = {}
    stop = asyncio.Event()

    async def sender(c: Collector, name: str) -> None:
        """Sends until told to stop; every send is awaited (retried across the failover)."""
        i = 0
        while not stop.is_set():
            cid = f"{name}-{i}"
            while True:
                try:
                    ack = await c.client.send("ops", f"{name} {i}", id=cid)
                    break
                except CommandError as exc:
                    if exc.code != "rate_limited":
                        raise
                    await asyncio.sleep((exc.retry_after or 100) / 1000)
            assert ack.seq is not None
            acked[cid] = ack.seq
            i += 1
            await asyncio.sleep(0.03)

    # One sender on each gateway: the one on A must carry its unacknowledged send over to B.
    senders = [
        asyncio.create_task(sender(collectors[0], "a")),
        asyncio.create_task(sender(collectors[4], "b")),
    ]
    try:
        await wait_until(lambda: len(acked) >= 30, "30 acknowledged sends before the crash")
        gw_a.kill()  # SIGKILL: no close frames, no cleanup
        await wait_until(
            lambda: all(c.client.stats.reconnects >= 1 for c in collectors[:4]),
            "A's clients reconnect",
        )
        count_at_failover = len(acked)
        await wait_until(lambda: len(acked) >= count_at_failover + 30, "30 more sends after")
        stop.set()
        await asyncio.gather(*senders)
        last = max(acked.values())
        for c in collectors:
            await wait_until(
                lambda c=c: bool(c.sequenced("ops")) and c.sequenced("ops")[-1] >= last,
                f"every client reaches seq {last}",
            )
        for i, c in enumerate(collectors):
            seqs = c.sequenced("ops")
            assert seqs == list(range(seqs[0], seqs[-1] + 1)), f"client {i}: gap or duplicate"
            ids = c.message_ids("ops")
            assert len(ids) == len(set(ids)), f"client {i}: a message twice"
            assert set(acked) <= set(ids), f"client {i}: missing acknowledged messages"
            if i < 4:
                assert c.client.url == url_b, "A's clients moved to B"
        # Each acknowledged message is one event: its seq is unique.
        assert len(set(acked.values())) == len(acked)
    finally:
        stop.set()
        for task in senders:
            task.cancel()
        for c in collectors:
            await c.stop()


async def test_graceful_restart_1012_moves_clients_who_catch_up(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    url_a = start_gateway(cluster, "gw-a")
    url_b = start_gateway(cluster, "gw-b")
    gw_a = cluster.procs[0]
    await make_room(redis_client, namespace, "town", "p0", ["p0", "p1", "p2"])
    movers = [Collector(Client([url_a, url_b], make_token(u))) for u in ("p0", "p1")]
    stayer = Collector(Client(url_b, make_token("p2")))
    everyone = [*movers, stayer]
    try:
        for c in everyone:
            await c.client.connect()
        before = [await stayer.client.send("town", f"before {i}") for i in range(5)]
        assert await asyncio.to_thread(gw_a.terminate) == 0  # SIGTERM: 1012 to its clients
        # Sent while the movers are away: they must get these from the replay.
        during = [await stayer.client.send("town", f"during {i}") for i in range(10)]
        await wait_until(lambda: all(m.client.stats.reconnects >= 1 for m in movers), "reconnect")
        after = await movers[0].client.send("town", "after")
        last = after.seq
        assert last is not None and last > max(a.seq or 0 for a in before + during)
        for c in everyone:
            await wait_until(
                lambda c=c: bool(c.sequenced("town")) and c.sequenced("town")[-1] >= last,
                "everyone reaches the last message",
            )
            seqs = c.sequenced("town")
            assert seqs == list(range(seqs[0], last + 1))
            texts = [e.data["text"] for e in c.events if e.type == "event" and e.kind == "message"]
            assert texts == [f"before {i}" for i in range(5)] + [
                f"during {i}" for i in range(10)
            ] + ["after"]
        for m in movers:
            assert m.client.stats.closes[0] == 1012
            assert m.client.url == url_b
    finally:
        for c in everyone:
            await c.stop()


async def test_edit_delete_typing_history_presence_through_the_client(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    history = cluster.start("roomstream_history", name="history")
    url = cluster.start(
        GATEWAY,
        env={"ROOMSTREAM_NODE_ID": "gw-h", "ROOMSTREAM_HISTORY_URL": history.url},
        name="gw-h",
    ).ws_url
    await make_room(redis_client, namespace, "desk", "kim", ["kim", "lee"])
    kim = Collector(Client(url, make_token("kim")))
    lee = Collector(Client(url, make_token("lee")))
    try:
        await kim.client.connect()
        await lee.client.connect()
        sent = await kim.client.send("desk", "first draft")
        assert sent.seq is not None
        edited = await kim.client.edit("desk", sent.seq, "final text")
        with pytest.raises(CommandError) as not_yours:
            await lee.client.edit("desk", sent.seq, "hijacked")
        assert not_yours.value.code == "forbidden"
        deleted = await kim.client.delete("desk", sent.seq)
        assert (edited.seq, deleted.seq) == (sent.seq + 1, sent.seq + 2)
        await kim.client.typing("desk")
        await wait_until(
            lambda: any(e.type == "typing" and e.user == "kim" for e in lee.events), "typing"
        )
        kinds = [e.kind for e in lee.events if e.type == "event" and e.seq is not None]
        await wait_until(
            lambda: (
                [e.kind for e in lee.events if e.type == "event" and e.seq is not None][-3:]
                == ["message", "message_edited", "message_deleted"]
            ),
            f"lee sees the message, its edit and its deletion (so far {kinds})",
        )
        presence = await lee.client.presence("desk")
        assert presence.room == "desk"

        async def history_has_all() -> bool:
            page = await lee.client.history("desk", limit=10)
            return [e.seq for e in page.events][-3:] == [sent.seq, sent.seq + 1, sent.seq + 2]

        for _ in range(200):  # the history service persists asynchronously
            if await history_has_all():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("history never returned the three events")
        page = await lee.client.history("desk", limit=10)
        assert page.events[0].seq == 1 and page.events[0].kind == "room_created"
    finally:
        await kim.stop()
        await lee.stop()


async def test_connect_rotates_past_dead_urls_and_times_out_when_none_answer(
    cluster: Cluster,
) -> None:
    dead = f"ws://127.0.0.1:{free_port()}/ws"  # nothing listens there
    url = start_gateway(cluster, "gw-live")
    async with Client([dead, url], make_token("fay")) as fay:
        assert fay.url == url
        assert (await fay.ping()).type == "pong"
    with pytest.raises(TimeoutError):
        await Client([dead], make_token("fay"), connect_timeout=1.0).connect()
