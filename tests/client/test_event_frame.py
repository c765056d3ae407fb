"""The client's fast construction of event frames equals pydantic's `model_construct`."""

from __future__ import annotations

from typing import Any

from roomstream_client.client import _event_frame
from roomstream_contracts.frames import EventFrame

MSG: dict[str, Any] = {
    "type": "event",
    "room": "main",
    "seq": 5,
    "id": "e1",
    "kind": "message",
    "user": "alice",
    "ts": 1,
    "data": {"text": "hi"},
}


def test_event_frame_is_model_construct() -> None:
    variants = [
        MSG,
        {k: v for k, v in MSG.items() if k != "seq"},  # online / offline: no seq
        {k: v for k, v in MSG.items() if k != "type"},
        {**MSG, "extra": 1},  # a newer server's field: pydantic's way (kept as extra)
        {k: v for k, v in MSG.items() if k != "room"},  # malformed: pydantic's way too
    ]
    for msg in variants:
        ours, theirs = _event_frame(msg), EventFrame.model_construct(**msg)
        assert isinstance(ours, EventFrame)
        assert ours == theirs and repr(ours) == repr(theirs)
        assert ours.model_fields_set == theirs.model_fields_set
        assert ours.model_extra == theirs.model_extra
        assert ours.model_dump() == theirs.model_dump()
