"""The projection never waits on a dead-lettered seq: `plan_room` counts skipped seqs as present
and applies them without effect (pure)."""

from __future__ import annotations

from roomstream_contracts.events import Envelope, EventKind
from roomstream_rooms.projection import plan_room


def ev(seq: int) -> Envelope:
    return Envelope(id=f"e{seq}", kind=EventKind.MESSAGE, room="r", ts=1, seq=seq)


def test_a_skipped_seq_closes_the_gap_and_is_not_applied() -> None:
    plan = plan_room(3, [ev(5), ev(6)], skipped={4})
    assert [e.seq for e in plan.apply] == [5, 6]
    assert plan.gap is None and plan.last_seq == 6


def test_a_skipped_seq_wins_over_its_event() -> None:
    """The poison event itself (e.g. refilled from the recent buffer) is never applied."""
    plan = plan_room(3, [ev(4), ev(5)], skipped={4})
    assert [e.seq for e in plan.apply] == [5] and plan.last_seq == 5


def test_without_the_skip_the_gap_is_still_reported() -> None:
    plan = plan_room(3, [ev(5), ev(6)])
    assert plan.apply == [] and plan.gap == (4, 4) and plan.last_seq is None


def test_a_hole_after_a_skip_is_reported() -> None:
    plan = plan_room(3, [ev(5), ev(8)], skipped={4})
    assert [e.seq for e in plan.apply] == [5]
    assert plan.gap == (6, 7) and plan.last_seq == 5


def test_skips_at_or_below_the_last_applied_seq_are_ignored() -> None:
    plan = plan_room(5, [ev(6)], skipped={2, 5})
    assert [e.seq for e in plan.apply] == [6] and plan.last_seq == 6


def test_a_skip_beyond_the_events_does_not_extend_the_plan() -> None:
    plan = plan_room(3, [ev(4)], skipped={6})
    assert [e.seq for e in plan.apply] == [4] and plan.last_seq == 4 and plan.gap is None
