"""The projection's pure rules: ordering against the last applied seq, gaps, presence notices."""

from __future__ import annotations

from roomstream_contracts.events import Envelope, EventKind
from roomstream_rooms.projection import (
    AddMember,
    CreateRoom,
    FailNode,
    OpenConn,
    PresenceInput,
    conn_change,
    plan_room,
    presence_notices,
    room_change,
)


def ev(seq: int, kind: EventKind = EventKind.MESSAGE, data: dict | None = None) -> Envelope:
    return Envelope(id=f"e{seq}", kind=kind, room="r", user="u", ts=seq, seq=seq, data=data or {})


def test_plan_orders_and_skips_applied_and_duplicate_events():
    plan = plan_room(2, [ev(4), ev(1), ev(3), ev(2), ev(3)])
    assert [e.seq for e in plan.apply] == [3, 4]
    assert plan.gap is None and plan.last_seq == 4


def test_plan_reports_a_gap_before_the_first_pending_event():
    plan = plan_room(2, [ev(6), ev(5)])
    assert plan.apply == [] and plan.gap == (3, 4)


def test_plan_applies_up_to_a_hole_and_reports_the_hole():
    plan = plan_room(0, [ev(1), ev(2), ev(5), ev(6)])
    assert [e.seq for e in plan.apply] == [1, 2]
    assert plan.gap == (3, 4)


def test_plan_with_nothing_new():
    assert plan_room(9, [ev(3), ev(9)]).apply == []
    assert plan_room(9, []).gap is None


def test_room_changes():
    created = room_change(
        ev(
            1,
            EventKind.ROOM_CREATED,
            {"name": "R", "kind": "private", "owner": "o", "members": ["a", "o"]},
        )
    )
    assert created == CreateRoom("r", "R", "private", "o", 1, ("o", "a"), 1)
    assert room_change(ev(2, EventKind.MEMBER_JOINED, {"by": "o"})) == AddMember("r", "u", 2)
    assert room_change(ev(3)) is None


def test_connection_changes():
    env = Envelope(id="c", kind=EventKind.CONNECTED, user="u", node="n", conn="c1", ts=7)
    assert conn_change(env) == OpenConn("c1", "u", "n", 7)
    failed = Envelope(id="f", kind=EventKind.NODE_FAILED, node="n", ts=9, data={"node": "g1"})
    assert conn_change(failed) == FailNode("g1", 9)
    broken = Envelope(id="b", kind=EventKind.CONNECTED, user="u", ts=7)
    assert conn_change(broken) is None


def test_presence_notices_on_first_and_last_connection_only():
    notices = presence_notices(
        PresenceInput(
            before={"a": 0, "b": 1, "c": 2, "d": 1},
            after={"a": 2, "b": 0, "c": 1, "d": 1},
            rooms_after={"a": ["r1", "r2"], "b": ["r1"], "c": ["r1"], "d": ["r3"]},
            joined=[("r4", "d"), ("r2", "a")],
        )
    )
    got = [(n.kind.value, n.room, n.user, n.connections) for n in notices]
    assert got == [
        ("online", "r1", "a", 2),
        ("online", "r2", "a", 2),
        ("offline", "r1", "b", 0),
        # d was online already and joined r4: r4 learns it is here; a's join is covered above.
        ("online", "r4", "d", 1),
    ]


def test_incarnation_retire_marks():
    from roomstream_rooms.projection import CloseConn, StartNode, retire_mark

    def env(kind: EventKind, data: dict) -> Envelope:
        return Envelope(id="x", kind=kind, user="u", node="g", conn="c", ts=5, data=data)

    started = conn_change(env(EventKind.NODE_STARTED, {"node": "g", "incarnation": 7}))
    assert started == StartNode("g", 5, 7) and retire_mark(started) == ("g", 6)
    opened = conn_change(env(EventKind.CONNECTED, {"incarnation": 7}))
    assert opened == OpenConn("c", "u", "g", 5, 7) and retire_mark(opened) == ("g", 6)
    closed = conn_change(env(EventKind.DISCONNECTED, {"code": 1000, "incarnation": 7}))
    assert isinstance(closed, CloseConn) and retire_mark(closed) == ("g", 6)
    failed = conn_change(env(EventKind.NODE_FAILED, {"node": "g", "incarnation": 7}))
    assert failed == FailNode("g", 5, 7) and retire_mark(failed) == ("g", 7)
    # Events of versions without incarnations: no mark (the node_failed ts rule applies).
    old_open = conn_change(env(EventKind.CONNECTED, {}))
    assert old_open == OpenConn("c", "u", "g", 5) and retire_mark(old_open) is None
    legacy = conn_change(env(EventKind.NODE_FAILED, {"node": "g"}))
    assert legacy == FailNode("g", 5) and retire_mark(legacy) is None
    # Malformed: ignored, never a crash of the projection.
    assert conn_change(env(EventKind.NODE_STARTED, {"node": "g"})) is None
    assert conn_change(env(EventKind.CONNECTED, {"incarnation": "x"})) is None
