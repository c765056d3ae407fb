"""Envelopes for tests that append straight to the log: one way to build one."""

from __future__ import annotations

from roomstream_contracts.events import Envelope, EventKind
from roomstream_contracts.ids import new_event_id, now_ms


def envelope(
    kind: EventKind, room: str | None, user: str, /, *, ts: int | None = None, **data: object
) -> Envelope:
    """A fresh event (new id, now unless `ts`) of `kind` in `room` by `user`; `data` as keywords
    (a `kind=` keyword is the data's, e.g. a room's public/private kind)."""
    return Envelope(
        id=new_event_id(), kind=kind, room=room, user=user, ts=ts or now_ms(), data=data
    )
