"""Presence coalescing (`presence_grace`): a reconnect within the grace makes no `offline` /
`online` pair, a real leave is `offline` once the grace is over, the read models are exact at
once. The rule alone, then the rooms service process fed connection events through the log."""

from __future__ import annotations

import asyncio

from roomstream_contracts.events import EventKind
from roomstream_rooms.presence_grace import PresenceGrace, by_user
from roomstream_rooms.projection import PresenceNotice

from tests.rooms.helpers import FAST_ENV, ROOMS, api, append, auth, conn_event, log_envelopes, poll

ON, OFF = EventKind.ONLINE, EventKind.OFFLINE


def test_online_within_grace_cancels_the_held_offline() -> None:
    g = PresenceGrace(5.0)
    assert g.filter([PresenceNotice(OFF, "r1", "u", 0), PresenceNotice(OFF, "r2", "u", 0)], 0) == []
    assert g.next_deadline() == 5.0
    # Back in r1 only (left r2 meanwhile): r1's pair vanishes, r2's offline stays held.
    assert g.filter([PresenceNotice(ON, "r1", "u", 1)], 1.0) == []
    assert g.due(4.9) == {}
    assert g.due(5.0) == {"u": ["r2"]}
    assert len(g) == 0
    # An online with nothing held passes; so does everything with no grace.
    assert g.filter([PresenceNotice(ON, "r1", "v", 1)], 6.0) == [PresenceNotice(ON, "r1", "v", 1)]
    none = PresenceGrace(0)
    assert none.filter([PresenceNotice(OFF, "r", "u", 0)], 0) == [PresenceNotice(OFF, "r", "u", 0)]


def test_a_second_offline_extends_the_grace_and_hold_restores() -> None:
    g = PresenceGrace(2.0)
    g.filter([PresenceNotice(OFF, "r", "u", 0)], 0.0)
    g.filter([PresenceNotice(ON, "r", "u", 1)], 0.5)
    g.filter([PresenceNotice(OFF, "r", "u", 0)], 1.0)
    assert g.due(2.5) == {}
    due = g.due(3.0)
    assert due == {"u": ["r"]}
    g.hold(due, 4.0)  # the append failed: held again, an online still cancels it
    g.filter([PresenceNotice(ON, "r", "u", 1)], 3.5)
    assert g.due(10.0) == {}


GRACE_S = 1.5
USERS = [f"u{i}" for i in range(40)]


async def test_reconnect_storm_then_a_real_leave(cluster, namespace, redis_client) -> None:
    rooms = cluster.start(ROOMS, env={**FAST_ENV, "ROOMSTREAM_PRESENCE_GRACE_S": str(GRACE_S)})
    async with api(rooms.url) as http:
        for room in ("hall", "den"):
            body = {"id": room, "name": room, "kind": "public", "members": USERS}
            assert (await http.post("/rooms", json=body, headers=auth("u0"))).status_code == 201

        async def presence(room: str) -> dict[str, int]:
            r = await http.get(f"/rooms/{room}/presence", headers=auth("u0"))
            return {u["user"]: u["connections"] for u in r.json()["users"]}

        async def notices() -> list[dict]:
            return [
                e
                for e in await log_envelopes(redis_client, namespace)
                if e["kind"] in ("online", "offline")
            ]

        for u in USERS:
            await append(
                redis_client, namespace, conn_event(EventKind.CONNECTED, u, "g1", f"{u}-1")
            )
        everyone = dict.fromkeys(USERS, 1)
        await poll(lambda: _is(presence("hall"), everyone))
        first = await notices()
        assert sorted((e["kind"], e["user"]) for e in first) == sorted(
            [("online", u) for u in USERS] * 2
        )  # one online per user and room
        seen = {e["id"] for e in first}

        # The storm: every socket drops and comes back (on another gateway) at once.
        storm = []
        for u in USERS:
            storm += [
                conn_event(EventKind.DISCONNECTED, u, "g1", f"{u}-1"),
                conn_event(EventKind.CONNECTED, u, "g2", f"{u}-2"),
            ]
        await asyncio.gather(*(append(redis_client, namespace, e) for e in storm))
        await poll(lambda: _conns_on(redis_client, namespace, "g2", len(USERS)))
        assert await presence("hall") == everyone and await presence("den") == everyone

        # A real leave after the storm: the read model at once, `offline` after the grace.
        leave = conn_event(EventKind.DISCONNECTED, "u0", "g2", "u0-2")
        await append(redis_client, namespace, leave)
        rest = {u: 1 for u in USERS[1:]}
        await poll(lambda: _is(presence("hall"), rest))
        await poll(lambda: _count(notices(), 2 * len(USERS) + 2), deadline_s=30)
        after = [e for e in await notices() if e["id"] not in seen]
        # No pair for the storm: the only new notices are u0's offline in both rooms, appended
        # no sooner than the grace after its disconnect.
        assert sorted((e["kind"], e["user"], e["room"]) for e in after) == [
            ("offline", "u0", "den"),
            ("offline", "u0", "hall"),
        ]
        assert all(e["ts"] - leave.ts >= GRACE_S * 1000 - 50 for e in after)
        await asyncio.sleep(GRACE_S + 0.5)
        assert len(await notices()) == 2 * len(USERS) + 2  # nothing else came
        assert await presence("den") == rest


async def _is(value, expected) -> bool:
    return await value == expected


async def _count(value, n: int) -> bool:
    return len(await value) >= n


async def _conns_on(redis_client, namespace: str, node: str, n: int) -> bool:
    from tests.rooms.helpers import keys

    return len(await redis_client.hgetall(keys(namespace).node_conns(node))) == n


def test_a_batch_changes_the_held_state_only_once_committed() -> None:
    # A batch fails after its grace was planned (an append or the commit failed): the consumer
    # delivers it again; the online that cancelled the held offline must cancel it again, not
    # be appended as a redundant `online` to the room's watchers.
    g = PresenceGrace(5.0)
    g.filter([PresenceNotice(OFF, "r", "u", 0)], 0.0)
    back = [PresenceNotice(ON, "r", "u", 1), PresenceNotice(ON, "r", "v", 1)]
    first = g.plan(back, 1.0)
    assert first.append == [PresenceNotice(ON, "r", "v", 1)]
    assert len(g) == 1 and g.next_deadline() == 5.0  # planning changed nothing
    retried = g.plan(back, 2.0)  # the first try was dropped (its batch failed)
    assert retried.append == first.append
    g.commit(retried)
    assert len(g) == 0 and g.due(10.0) == {}
    # A held offline planned but not committed is not held; committed, it is.
    step = g.plan([PresenceNotice(OFF, "r", "w", 0)], 3.0)
    assert step.append == [] and step.holds and g.next_deadline() is None
    g.commit(step)
    assert g.due(8.0) == {"w": ["r"]}


def test_a_partial_flush_holds_again_only_what_was_not_appended() -> None:
    g = PresenceGrace(1.0)
    rooms = ["r1", "r2", "r3"]
    g.filter([PresenceNotice(OFF, r, u, 0) for u in ("u", "v") for r in rooms], 0.0)
    due = g.due(1.0)
    assert due == {"u": rooms, "v": rooms}
    # The first chunk (u's three rooms and v's r1) was appended, then the append failed.
    unsent = [PresenceNotice(OFF, "r2", "v", 0), PresenceNotice(OFF, "r3", "v", 0)]
    g.hold(by_user(unsent), 1.0)
    assert g.due(1.0) == {"v": ["r2", "r3"]}
