"""The client's per-room sequencing: exactly once, in seq order, gaps held until filled."""

from __future__ import annotations

import random

from roomstream_client.backoff import Backoff
from roomstream_client.sequencer import Sequencer


def test_in_order_events_pass_through() -> None:
    s: Sequencer[str] = Sequencer()
    s.track("r", 0)
    assert s.offer("r", 1, "a") == ["a"]
    assert s.offer("r", 2, "b") == ["b"]
    assert s.last("r") == 2


def test_duplicates_are_dropped_and_counted() -> None:
    s: Sequencer[str] = Sequencer()
    s.track("r", 3)
    assert s.offer("r", 3, "old") == []
    assert s.offer("r", 1, "older") == []
    assert s.offer("r", 4, "new") == ["new"]
    assert s.offer("r", 4, "new again") == []
    assert s.duplicates == 3


def test_gap_is_held_until_filled_then_released_in_order() -> None:
    s: Sequencer[int] = Sequencer()
    s.track("r", 10)
    assert s.offer("r", 13, 13, now=1.0) == []
    assert s.offer("r", 12, 12, now=1.5) == []
    assert s.held("r") == 2
    assert s.stalled(now=2.0, after=0.5) == ["r"]
    assert s.offer("r", 11, 11) == [11, 12, 13]
    assert s.held("r") == 0
    assert s.stalled(now=100.0, after=0.5) == []
    assert s.last("r") == 13


def test_held_duplicate_is_dropped() -> None:
    s: Sequencer[str] = Sequencer()
    s.track("r", 0)
    s.offer("r", 3, "x")
    assert s.offer("r", 3, "x again") == []
    assert s.offer("r", 1, "a") == ["a"]
    assert s.offer("r", 2, "b") == ["b", "x"]


def test_untracked_room_holds_until_joined_position() -> None:
    s: Sequencer[int] = Sequencer()
    # Live events of a room whose `joined` has not arrived yet.
    assert s.offer("r", 5, 5) == []
    assert s.offer("r", 6, 6) == []
    assert s.offer("r", 7, 7) == []
    # `joined` says the room was at 5 when we subscribed: 5 is before our time, 6 and 7 are due.
    assert s.track("r", 5) == [6, 7]
    assert s.last("r") == 7


def test_track_does_not_move_a_tracked_room_but_reset_does() -> None:
    s: Sequencer[int] = Sequencer()
    s.track("r", 4)
    assert s.track("r", 9) == []
    assert s.last("r") == 4
    s.offer("r", 8, 8)
    assert s.reset("r", 7) == [8]
    assert s.last("r") == 8


def test_skip_to_first_available_releases_what_exists() -> None:
    s: Sequencer[int] = Sequencer()
    s.track("r", 2)
    s.offer("r", 10, 10)
    s.offer("r", 11, 11)
    # Events 3..9 exist nowhere any more: continue from 10.
    assert s.skip_to("r", 10) == [10, 11]
    assert s.last("r") == 11


def test_forget_and_positions() -> None:
    s: Sequencer[int] = Sequencer()
    s.track("a", 1)
    s.track("b", 2)
    s.offer("c", 1, 1)  # untracked: not a position
    assert s.positions() == {"a": 1, "b": 2}
    s.forget("a")
    assert s.positions() == {"b": 2}
    assert s.last("a") is None


def test_held_events_are_bounded() -> None:
    s: Sequencer[int] = Sequencer(max_held_per_room=3)
    s.track("r", 0)
    for seq in (5, 4, 3, 6):
        s.offer("r", seq, seq)
    assert s.held("r") == 3
    # Beyond the bound the newest event is not kept (a later replay brings it back).
    assert s.offer("r", 1, 1) == [1]
    assert s.offer("r", 2, 2) == [2, 3, 4, 5]
    assert s.last("r") == 5


def test_random_interleaving_of_live_and_replay_delivers_exactly_once() -> None:
    rng = random.Random(7)
    for _ in range(200):
        total = rng.randint(1, 60)
        start = rng.randint(0, 5)
        frames = [seq for seq in range(start + 1, start + total + 1)]
        # Every event arrives once live and once from the replay, in a random interleaving.
        arrivals = frames + frames
        rng.shuffle(arrivals)
        s: Sequencer[int] = Sequencer()
        s.track("r", start)
        out: list[int] = []
        for seq in arrivals:
            out.extend(s.offer("r", seq, seq))
        assert out == frames
        assert s.duplicates == total


def test_backoff_grows_with_jitter_and_resets() -> None:
    b = Backoff(base=0.1, cap=1.0, factor=2.0, jitter=0.5, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(6)]
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling * 0.5 <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert b.next_delay() <= 0.1


def test_backoff_without_jitter_is_exact() -> None:
    b = Backoff(base=0.5, cap=3.0, jitter=0.0)
    assert [b.next_delay() for _ in range(4)] == [0.5, 1.0, 2.0, 3.0]
