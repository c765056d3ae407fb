"""Grants and kicks that a gateway's control channel missed while its Redis connection was cut
(docs/gateway.md, "Routed delivery"; `roomstream_gateway.controlgap`): real rooms service and
gateway, the gateway's Redis behind a proxy that is kept cut while the rooms API grants a private
room, creates one with members, removes a member and kicks a user (the shared Redis is never
paused or killed). After the heal the granted socket receives both rooms from their grants on,
each seq once and in order, then live; the removed member got its `member_left` and nothing of
the room after it; the kicked socket is closed with 1008 (docs/protocol.md, close codes). Then
the same with a pub/sub connection that stays open but carries nothing (detected by the
gateway's ping)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis
from roomstream_contracts.streams import StreamKeys
from roomstream_gateway.controlgap import AGAIN_S, grant_seq, missing_rooms
from roomstream_gateway.delivery import Core
from roomstream_kit.eventlog import EventLog, RoomCheck

from tests.conftest import Cluster, make_token, service_token
from tests.gateway.helpers import _backlog, client, close_code, poll, recv, request
from tests.rooms.helpers import message
from tests.support.proxy import CuttableProxy

GATEWAY = "roomstream_gateway"
ROOMS = "roomstream_rooms"
WITHIN_S = 20.0
GAP_MESSAGES = 120
"""Messages after the grant in the gap: the grant is on the reconcile's third page."""


async def events_until(ws: Any, until: dict[str, int], within_s: float = WITHIN_S) -> Any:
    """room → (seq, kind, user) of the events this socket receives until it has seq
    `until[room]` of each room (other rooms' events included)."""
    got: dict[str, list[Any]] = {}
    deadline = time.monotonic() + within_s
    while any(not got.get(r) or got[r][-1][0] < seq for r, seq in until.items()):
        frame = await recv(ws, max(0.1, deadline - time.monotonic()))
        if frame.get("type") == "event" and frame.get("seq"):
            seen = got.setdefault(frame["room"], [])
            seen.append((frame["seq"], frame["kind"], frame.get("user")))
    return got


async def call(
    http: httpx.AsyncClient, method: str, path: str, status: int, auth: Any, body: Any = None
) -> None:
    """A rooms API call that must answer `status`."""
    r = await http.request(method, path, json=body, headers=auth)
    assert r.status_code == status, r.text


async def test_grants_removals_and_kicks_during_a_cut_control_channel(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    keys = StreamKeys(namespace=namespace)
    log = EventLog(redis_client, keys)
    rooms = cluster.start(ROOMS)
    proxy, url = await CuttableProxy.before_redis(cluster.env["REDIS_URL"])
    try:
        # Started from a thread: the proxy runs on this event loop and must keep serving.
        env = {
            "ROOMSTREAM_ROOMS_URL": rooms.url,
            "REDIS_URL": url,
            "ROOMSTREAM_PUBSUB_PING_S": "0.5",
        }
        gw = await asyncio.to_thread(cluster.start, GATEWAY, env=env)
        owner = {"Authorization": f"Bearer {make_token('olga')}"}
        service = {"Authorization": f"Bearer {service_token()}"}
        async with httpx.AsyncClient(base_url=rooms.url, timeout=10) as http:
            # vault: no local socket receives it (a grant can only arrive on the control
            # channel); den: rex's, whom the gap removes; race: granted right after the heal.
            for room, members in (("vault", []), ("den", ["rex"]), ("race", [])):
                body = {"id": room, "name": room, "kind": "private", "members": members}
                await call(http, "POST", "/rooms", 201, owner, body)
            gail, welcome = await client(gw.ws_url, "gail")
            assert welcome["rooms"] == {}, welcome
            rex, welcome = await client(gw.ws_url, "rex")
            assert list(welcome["rooms"]) == ["den"], welcome
            kim, _ = await client(gw.ws_url, "kim")

            await proxy.cut()  # and kept cut while the rooms API acts
            await call(http, "PUT", "/rooms/vault/members/gail", 200, owner)
            body = {"id": "born", "name": "Born", "kind": "private", "members": ["gail"]}
            await call(http, "POST", "/rooms", 201, owner, body)
            await call(http, "DELETE", "/rooms/den/members/rex", 204, owner)
            await call(http, "POST", "/users/kim/disconnect", 202, service)
            for room, n in (("vault", GAP_MESSAGES), ("born", 1), ("den", 1)):
                for i in range(n):
                    result = await log.append(
                        message(room, "olga", f"in the gap {i}"), room_check=RoomCheck.EXISTS
                    )
                    assert result.ok, result

            async def projected() -> bool:  # the rooms projection has the grants (read model)
                listed = await redis_client.smembers(keys.user_rooms("gail"))
                return {b"vault", b"born"} <= set(listed)

            await poll(projected, within_s=WITHIN_S)
            await asyncio.sleep(0.5)  # the gateway keeps retrying against the cut proxy
        await proxy.restore()
        # A grant right after the heal races the reconcile (live or found by it: once either way).
        async with httpx.AsyncClient(base_url=rooms.url, timeout=10) as http:
            await call(http, "PUT", "/rooms/race/members/gail", 200, owner)
        for i in range(3):
            result = await log.append(message("race", "olga", f"r{i}"), room_check=RoomCheck.EXISTS)
            assert result.ok and result.seq == 3 + i, result

        # The granted socket: vault from its member_joined on, born from room_created on.
        last = 2 + GAP_MESSAGES  # vault: the grant at 2, then the messages
        got = await events_until(gail, {"vault": last, "born": 2, "race": 5})
        assert got == {
            "race": [(2, "member_joined", "gail")] + [(s, "message", "olga") for s in (3, 4, 5)],
            "vault": [(2, "member_joined", "gail")]
            + [(s, "message", "olga") for s in range(3, last + 1)],
            "born": [(1, "room_created", "olga"), (2, "message", "olga")],
        }, got
        # The removed member: its own member_left, then nothing more of the room.
        assert await events_until(rex, {"den": 2}) == {"den": [(2, "member_left", "rex")]}
        # The kicked socket: closed as a live kick would have (1008).
        assert await close_code(kim, WITHIN_S) == 1008
        # Then live, once, in order.
        for room, seq in (("vault", last + 1), ("den", 4)):
            after = await log.append(
                message(room, "olga", "after the heal"), room_check=RoomCheck.EXISTS
            )
            assert after.ok and after.seq == seq, after
        probe = await request(gail, {"type": "send", "room": "vault", "text": "hi", "id": "g1"})
        assert probe["type"] == "ack" and probe["seq"] == last + 2, probe
        assert await events_until(gail, {"vault": last + 2}) == {
            "vault": [(last + 1, "message", "olga"), (last + 2, "message", "gail")]
        }
        # Anything of den written to rex (with vault's, in the same delivery) would precede
        # the pong.
        assert (await request(rex, {"type": "ping"}))["type"] == "pong"
        assert [f for f in _backlog.pop(rex, ()) if f.get("type") == "event"] == []

        # Detected late: the pub/sub connection stays open but carries nothing (no reset, no
        # close) while a room is created, gail is granted it and rex is kicked. The gateway's
        # ping notices it (ROOMSTREAM_PUBSUB_PING_S), drops it and reconciles.
        await asyncio.sleep(AGAIN_S + 1)  # the heal's second pass is over: only a drop helps
        assert proxy.stall_pubsub() >= 2
        async with httpx.AsyncClient(base_url=rooms.url, timeout=10) as http:
            body = {"id": "late", "name": "Late", "kind": "private", "members": []}
            await call(http, "POST", "/rooms", 201, owner, body)
            await call(http, "PUT", "/rooms/late/members/gail", 200, owner)
            await call(http, "POST", "/users/rex/disconnect", 202, service)
        for room, seq in (("late", 3), ("vault", last + 3)):
            result = await log.append(message(room, "olga", "silent"), room_check=RoomCheck.EXISTS)
            assert result.ok and result.seq == seq, result
        got = await events_until(gail, {"late": 3, "vault": last + 3})
        assert got == {
            "late": [(2, "member_joined", "gail"), (3, "message", "olga")],
            "vault": [(last + 3, "message", "olga")],
        }, got
        assert await close_code(rex, WITHIN_S) == 1008
        await gail.close()
    finally:
        await asyncio.to_thread(cluster.stop_all)  # the proxy serves the stopping gateway
        await proxy.cut()


def test_missing_rooms_and_grant_seq() -> None:
    """The reconcile's decisions (pure): which rooms a welcomed socket lacks, where the user's
    newest grant is in a page of a recent stream (newest first)."""
    core = Core()
    peer = core.add("s1", "gail")
    core.add("s2", "gail", welcoming=True)  # left to its welcome
    core.grant("have", ["gail"], 3)
    assert missing_rooms(core, "gail", [b"have", b"vault", "~gail"]) == ["vault"]
    assert missing_rooms(core, "nobody", [b"vault"]) == []
    core.unsubscribe(peer, "have")
    assert "have" in missing_rooms(core, "gail", [])  # remembered grant: checked by the roster

    def entry(seq: int, body: dict[str, Any]) -> tuple[bytes, dict[bytes, bytes]]:
        return f"{seq}-0".encode(), {b"e": orjson.dumps({"seq": seq, **body})}

    page = [
        entry(9, {"kind": "message", "user": "gail", "data": {"text": "member_joined"}}),
        entry(8, {"kind": "member_joined", "user": "other"}),
        entry(7, {"kind": "member_joined", "user": "gail"}),
        entry(2, {"kind": "member_joined", "user": "gail"}),
    ]
    assert grant_seq("gail", page) == (7, None)
    assert grant_seq("zed", page) == (None, 2)  # not in this page: look below seq 2
    created = [entry(1, {"kind": "room_created", "data": {"owner": "o", "members": ["zed"]}})]
    assert grant_seq("zed", created) == (1, None)
    assert grant_seq("zed", []) == (None, None)
    left = [entry(10, {"kind": "member_left", "user": "gail"}), *page]
    assert grant_seq("gail", left) == (None, None)  # the membership ended after its grant
