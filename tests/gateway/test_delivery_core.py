"""The delivery core without sockets: every interleaving of appends, tail deliveries, a join's
steps (and its failure and retry) and membership changes gives each seq once, in order, with
the `joined` reply before the missed events and those before live ones."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from roomstream_contracts.streams import FIELD_EVENT, FIELD_KIND, FIELD_ROOM
from roomstream_gateway.delivery import Core, Done, Need, Peer

ROOM = "r"
USER = "u"


def body(seq: int, kind: str = "message", user: str = "w") -> dict[str, Any]:
    data: dict[str, Any] = {"text": f"m{seq}", "client_id": f"c{seq}"} if kind == "message" else {}
    return {
        "id": f"e{seq}",
        "kind": kind,
        "room": ROOM,
        "seq": seq,
        "user": user,
        "ts": 1,
        "data": data,
    }


def entry(ev: dict[str, Any]) -> dict[bytes, bytes]:
    return {
        FIELD_KIND: ev["kind"].encode(),
        FIELD_ROOM: ev["room"].encode(),
        FIELD_EVENT: orjson.dumps(ev),
    }


class World:
    """A room's log (appended so far), a tail that lags behind it, and one socket."""

    def __init__(self, core: Core, peer: Peer, log: list[dict[str, Any]]) -> None:
        self.core = core
        self.peer = peer
        self.log = log
        self.appended = 0
        self.tailed = 0
        self.written: list[dict[str, Any]] = []

    def write(self, frames: list[Any]) -> None:
        self.written.extend(orjson.loads(p) for p, _ in frames)

    def append(self) -> None:
        self.appended += 1

    def tail(self) -> None:
        ev = self.log[self.tailed]
        self.tailed += 1
        out, *_ = self.core.deliver([entry(ev)], [])
        self.write(out.get(self.peer, []))

    def fetch(self, after: int, until: int) -> list[dict[str, Any]]:
        return [e for e in self.log[: self.appended] if after < e["seq"] <= until]

    def seqs(self) -> list[int]:
        return [f["seq"] for f in self.written if f.get("type") == "event"]


def interleavings(a: list[str], b: list[str]) -> Iterator[list[str]]:
    """Every merge of two sequences keeping each one's order."""
    n = len(a) + len(b)
    for picks in itertools.combinations(range(n), len(a)):
        ia, ib, out = iter(a), iter(b), []
        for i in range(n):
            out.append(next(ia) if i in picks else next(ib))
        yield out


def log_actions(n: int) -> list[list[str]]:
    """Appends and tail reads of n events, in every order the tail allows (it reads only what
    was appended)."""
    out: list[list[str]] = []

    def rec(appended: int, tailed: int, acc: list[str]) -> None:
        if tailed == n:
            out.append(acc)
            return
        if appended < n:
            rec(appended + 1, tailed, [*acc, "A"])
        if tailed < appended:
            rec(appended, tailed + 1, [*acc, "T"])

    rec(0, 0, [])
    return out


def run_join(w: World, since: int | None, fail_first: bool) -> Iterator[None]:
    """A join's steps as a generator (one `yield` between awaits); with `fail_first`, the replay
    fetch fails once (history down) and the join is retried."""
    attempts = 2 if fail_first else 1
    for attempt in range(attempts):
        w.core.begin_join(w.peer, ROOM, since)
        yield
        current = w.appended
        rng = w.core.replay_range(w.peer, current)
        yield
        if attempt == 0 and fail_first:
            w.write(w.core.abort_join(w.peer))
            w.written.append({"type": "error", "code": "unavailable"})
            yield
            continue
        events = w.fetch(*rng) if rng else []
        for _ in range(5):
            outcome = w.core.finish_join(w.peer, "j", events)
            if isinstance(outcome, Done):
                w.write(outcome.frames)
                break
            assert isinstance(outcome, Need)
            yield
            events = w.fetch(outcome.after, outcome.until)
        else:
            raise AssertionError("the join did not converge")


def drive(w: World, actions: list[str], join: Iterator[None]) -> None:
    for act in actions:
        if act == "A":
            w.append()
        elif act == "T":
            w.tail()
        else:
            next(join, None)
    for _ in join:  # the rest of the join, if the schedule ended first
        pass
    while w.appended < len(w.log):
        w.append()
    while w.tailed < len(w.log):
        w.tail()


def check(w: World, since: int | None, welcome: int | None) -> None:
    """Each seq once; before `joined` only live seqs above the welcome position, increasing;
    after it the missed ones from since+1, then live ones, contiguous to the end."""
    seqs = w.seqs()
    assert len(seqs) == len(set(seqs)), seqs
    kinds = [f["type"] for f in w.written]
    j = kinds.index("joined")
    before = [f["seq"] for f in w.written[:j] if f["type"] == "event"]
    after = [f["seq"] for f in w.written[j:] if f["type"] == "event"]
    if welcome is not None:
        assert all(s > welcome for s in before), (before, welcome)
    assert before == sorted(before)
    joined = w.written[j]
    start = since if since is not None else joined["seq"]
    have = sorted(set(before) | set(after))
    expected = list(range(start + 1, len(w.log) + 1))
    assert [s for s in have if s > start] == expected, (w.written, start)
    # after joined: missed (ascending) then live (ascending), together strictly increasing
    assert after == sorted(after), after
    if since is not None:
        bound = welcome if welcome is not None else joined["seq"]
        assert joined["missed"] == len([s for s in after if since < s <= bound])


N = 3
JOIN_STEPS_OK = ["J"] * 3
JOIN_STEPS_RETRY = ["J"] * 6


@pytest.mark.parametrize("fail_first", [False, True])
@pytest.mark.parametrize("prefix", [0, 1, 2])
def test_resume_on_a_welcomed_socket_every_interleaving(fail_first: bool, prefix: int) -> None:
    """welcome read seq W while the tail had delivered only `prefix` events (<= W); the client
    resumes with since=0 while more events are appended and tailed."""
    steps = JOIN_STEPS_RETRY if fail_first else JOIN_STEPS_OK
    cases = 0
    for welcome_at in range(prefix, N + 1):
        for actions in log_actions(N):
            # the schedule starts after `welcome_at` appends and `prefix` tail reads
            if actions[: welcome_at + prefix].count("A") < welcome_at:
                continue
            for schedule in interleavings(actions, steps):
                core = Core()
                log = [body(s) for s in range(1, N + 1)]
                peer = core.add("sock", USER)
                w = World(core, peer, log)
                core.begin_welcome(peer, [ROOM])
                # run the log until `welcome_at` appended, `prefix` tailed
                sched = list(schedule)
                while w.appended < welcome_at or w.tailed < prefix:
                    act = next(a for a in sched if a in "AT")
                    sched.remove(act)
                    if act == "A":
                        w.append()
                    elif w.tailed < w.appended:
                        w.tail()
                    else:
                        w.append()
                kept, frames = core.finish_welcome(peer, {ROOM: w.appended})
                assert kept == {ROOM: w.appended}
                welcome = w.appended
                w.write(frames)
                drive(w, sched, run_join(w, 0, fail_first))
                check(w, 0, welcome)
                cases += 1
    assert cases > 0


@pytest.mark.parametrize("fail_first", [False, True])
@pytest.mark.parametrize("since", [None, 0, 2])
def test_fresh_join_every_interleaving(fail_first: bool, since: int | None) -> None:
    """A socket joins a room it does not receive while events are appended and the tail lags."""
    steps = JOIN_STEPS_RETRY if fail_first else JOIN_STEPS_OK
    for actions in log_actions(N):
        for schedule in interleavings(actions, steps):
            core = Core()
            peer = core.add("sock", USER)
            w = World(core, peer, [body(s) for s in range(1, N + 1)])
            drive(w, schedule, run_join(w, since, fail_first))
            if since is not None and since > len(w.log):
                continue
            check(w, since, None)


def test_membership_granted_and_ended_at_their_seq() -> None:
    core = Core()
    peer = core.add("sock", USER)
    w = World(
        core,
        peer,
        [
            body(1),
            body(2, "member_joined", USER),
            body(3),
            body(4, "member_left", USER),
            body(5),
        ],
    )
    for _ in range(5):
        w.append()
        w.tail()
    # subscribed by its member_joined (received it), ended after its member_left (received it)
    assert w.seqs() == [2, 3, 4]
    assert not core.subscribed(peer, ROOM)


def test_a_stale_member_left_does_not_end_a_join_that_granted_after_it() -> None:
    """leave then join pipelined: the tail delivers the leave while the join is pending."""
    core = Core()
    peer = core.add("sock", USER)
    log = [body(1), body(2, "member_left", USER), body(3, "member_joined", USER), body(4)]
    w = World(core, peer, log)
    w.append()
    w.append()
    core.begin_join(peer, ROOM, None)
    w.append()  # our member_joined
    core.granted(peer, 3)
    w.tail()
    w.tail()  # the stale member_left, while the join is pending
    rng = core.replay_range(peer, w.appended)
    assert rng is None
    outcome = core.finish_join(peer, "j", [])
    assert isinstance(outcome, Done) and outcome.subscribed
    w.write(outcome.frames)
    drive(w, [], iter(()))
    assert core.subscribed(peer, ROOM)
    assert w.seqs() == [4]


def test_a_member_left_during_the_join_ends_it_at_its_seq() -> None:
    core = Core()
    peer = core.add("sock", USER)
    log = [body(1), body(2, "member_joined", USER), body(3), body(4, "member_left", USER)]
    log.append(body(5))
    w = World(core, peer, log)
    w.append()
    core.begin_join(peer, ROOM, 0)
    w.append()
    core.granted(peer, 2)
    for _ in range(3):
        w.append()
    rng = core.replay_range(peer, w.appended)
    assert rng == (0, 5)
    outcome = core.finish_join(peer, "j", w.fetch(*rng))
    assert isinstance(outcome, Done) and not outcome.subscribed
    w.write(outcome.frames)
    drive(w, [], iter(()))
    assert w.seqs() == [1, 2, 3, 4]  # nothing after its own member_left
    assert not core.subscribed(peer, ROOM)


def test_a_replay_with_a_hole_asks_for_the_range() -> None:
    core = Core()
    peer = core.add("sock", USER)
    log = [body(s) for s in range(1, 7)]
    core.begin_join(peer, ROOM, 0)
    rng = core.replay_range(peer, 6)
    assert rng == (0, 6)
    outcome = core.finish_join(peer, "j", [log[0], log[1], log[4], log[5]])
    assert outcome == Need(2, 4)
    outcome = core.finish_join(peer, "j", [log[2], log[3]])
    assert isinstance(outcome, Done)
    assert [orjson.loads(p).get("seq") for p, _ in outcome.frames] == [6, 1, 2, 3, 4, 5, 6]


def test_events_gone_by_retention_say_where_the_room_continues() -> None:
    core = Core()
    peer = core.add("sock", USER)
    log = [body(s) for s in range(1, 7)]
    core.begin_join(peer, ROOM, 0)
    rng = core.replay_range(peer, 6)
    assert rng == (0, 6)
    outcome = core.finish_join(peer, "j", log[3:], first_available=4)
    assert isinstance(outcome, Done)
    joined = orjson.loads(outcome.frames[0][0])
    assert (joined["recovered"], joined["first_available"], joined["missed"]) == (False, 4, 3)


def test_a_socket_registering_after_a_grant_finds_the_room_among_recent_grants() -> None:
    """The tail delivered `room_created` / `member_joined` before the socket registered (and the
    read model of the user's rooms may not have it yet): the welcome finds it in `recent_rooms`;
    a later `member_left` forgets it; the memory is bounded."""
    core = Core(recent_grants=3)
    errors: list[BaseException] = []
    core.deliver([entry(body(2, "member_joined", USER))], errors)
    assert core.recent_rooms(USER) == [ROOM]
    peer = core.add("sock", USER, welcoming=True)
    core.begin_welcome(peer, core.recent_rooms(USER))
    kept, live = core.finish_welcome(peer, {ROOM: 2})
    assert kept == {ROOM: 2} and live == []
    core.deliver([entry(body(3))], errors)
    assert core.subscribed(peer, ROOM)
    core.deliver([entry(body(4, "member_left", USER))], errors)
    assert core.recent_rooms(USER) == []
    for n in range(5):  # grants of other users push the oldest out
        core.grant(f"room-{n}", [f"u{n}"], 1)
    assert len(core.recent) == 3 and core.recent_rooms("u0") == []
    assert errors == []


def test_a_grant_before_the_welcome_finishes_is_held_for_it() -> None:
    core = Core()
    peer = core.add("sock", USER, welcoming=True)
    errors: list[BaseException] = []
    core.deliver([entry(body(2, "member_joined", USER)), entry(body(3))], errors)
    core.begin_welcome(peer, [])
    kept, live = core.finish_welcome(peer, {})
    assert kept == {} and [orjson.loads(p)["seq"] for p, _ in live] == [2, 3]
