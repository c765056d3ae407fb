"""Pure logic of stream retention: how far a log shard may be trimmed.

An entry may go only once every consumer group has processed it: below the group's oldest pending
entry, and not past its last-delivered id. The age / length policy can only hold trimming back
further. Stream ids are compared as (milliseconds, sequence) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

from roomstream_kit.redis import text

StreamId = tuple[int, int]


def parse_id(raw: bytes | str) -> StreamId:
    ms, _, seq = text(raw).partition("-")
    return int(ms), int(seq or 0)


def format_id(sid: StreamId) -> str:
    return f"{sid[0]}-{sid[1]}"


def after(sid: StreamId) -> StreamId:
    """The smallest id greater than `sid`."""
    return sid[0], sid[1] + 1


@dataclass(frozen=True, slots=True)
class GroupState:
    name: str
    last_delivered: StreamId
    oldest_pending: StreamId | None
    entries_read: int | None
    lag: int | None

    @property
    def safe_below(self) -> StreamId:
        """Every entry with a smaller id has been processed (acknowledged) by this group."""
        processed_through = after(self.last_delivered)
        if self.oldest_pending is not None and self.oldest_pending < processed_through:
            return self.oldest_pending
        return processed_through


def trim_minid(
    groups: list[GroupState],
    *,
    required: list[str],
    age_cutoff: StreamId | None,
    length_cutoff: StreamId | None,
) -> StreamId | None:
    """The MINID to trim a shard to, or None to leave it alone.

    No groups at all, or a required group missing, means nothing is known to be processed.
    `age_cutoff` / `length_cutoff` are the policy's limits (None: that condition is off).
    """
    if not groups:
        return None
    names = {g.name for g in groups}
    if any(r not in names for r in required):
        return None
    minid = min(g.safe_below for g in groups)
    for cutoff in (age_cutoff, length_cutoff):
        if cutoff is not None:
            minid = min(minid, cutoff)
    return minid


def horizon_distance(
    group: GroupState, entries_added: int, length: int, first_entry: StreamId | None
) -> int | None:
    """Processed entries of a group that are still in the stream: how far it is ahead of the
    stream's first entry, i.e. of the trimming horizon (0 means trimming has caught up with it).
    None when Redis cannot tell (its `entries-read` counter is unknown)."""
    if first_entry is None or group.last_delivered < first_entry:
        return 0
    if group.entries_read is not None:
        return max(0, group.entries_read - (entries_added - length))
    if group.lag is not None:
        return max(0, length - group.lag)
    return None
