"""The one codec: JSON by orjson, for frames, envelopes and log entries.

Pure functions. The gateway's delivery path calls `client_frame_of` once per event (not once per
recipient); everything else may use the pydantic models.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from .errors import ErrorCode, ProtocolError
from .events import DELIVERED_KINDS, USER_STREAM_KINDS, Envelope, EventKind
from .frames import COMMAND_TYPES, Command
from .streams import FIELD_EVENT

dumps = orjson.dumps
loads = orjson.loads
JSONDecodeError = orjson.JSONDecodeError

_COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)


# -- client commands ---------------------------------------------------------------------------


def parse_command(raw: str | bytes) -> Command:
    """Parse and validate one client frame.

    Raises `ProtocolError(bad_request)` for malformed JSON, a non-object, an unknown `type`, or a
    missing / wrongly typed field; the error carries the frame's `ref` when one could be read.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "malformed JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a frame must be a JSON object")
    ref = obj.get("ref")
    ref = ref if isinstance(ref, str) else None
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in COMMAND_TYPES:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown frame type {kind!r}", ref)
    try:
        return _COMMAND_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, describe_validation_error(exc), ref) from None


def describe_validation_error(exc: ValidationError) -> str:
    """A short, client-readable summary of a pydantic validation error."""
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int) or len(err["loc"]) == 1)
        parts.append(f"{loc}: {err['msg']}" if loc else str(err["msg"]))
    return "; ".join(parts)


# -- server frames -----------------------------------------------------------------------------


def frame(type_: str, /, **fields: Any) -> bytes:
    """Encode a server frame, leaving out fields that are None."""
    body: dict[str, Any] = {"type": type_}
    body.update((k, v) for k, v in fields.items() if v is not None)
    return orjson.dumps(body)


def error_frame(
    code: ErrorCode, message: str, ref: str | None = None, retry_after: int | None = None
) -> bytes:
    return frame("error", ref=ref, code=code.value, message=message, retry_after=retry_after)


def event_body(envelope: dict[str, Any]) -> dict[str, Any]:
    """The `event` frame body of a decoded envelope dict (used inside `history` replies too)."""
    body: dict[str, Any] = {
        "type": "event",
        "room": envelope.get("room"),
        "seq": envelope.get("seq"),
        "id": envelope["id"],
        "kind": envelope["kind"],
        "user": envelope.get("user"),
        "ts": envelope["ts"],
        "data": envelope.get("data") or {},
    }
    if body["seq"] is None:
        del body["seq"]
    return body


def user_body(envelope: dict[str, Any]) -> dict[str, Any]:
    """The `user` frame body of a decoded envelope of a user's stream: a user event shows the
    publisher's kind, data and `by`; a read marker kind `read` with `{"room", "seq"}`."""
    data = envelope.get("data") or {}
    body: dict[str, Any] = {"type": "user", "seq": envelope.get("seq"), "id": envelope["id"]}
    if envelope["kind"] == EventKind.USER_EVENT:
        body.update(kind=data.get("kind"), ts=envelope["ts"], data=data.get("data") or {})
        if data.get("by") is not None:
            body["by"] = data["by"]
    else:
        body.update(kind=envelope["kind"], ts=envelope["ts"], data=data)
    return body


def client_frame_of(envelope: dict[str, Any]) -> bytes | None:
    """The frame that room subscribers receive for an envelope, or None if it is not delivered.

    `typing` becomes a `typing` frame, the kinds of a user's stream a `user` frame; every other
    delivered kind an `event` frame.
    """
    kind = envelope.get("kind")
    if kind not in DELIVERED_KINDS:
        return None
    if kind in USER_STREAM_KINDS:
        return orjson.dumps(user_body(envelope))
    if kind == EventKind.TYPING:
        return orjson.dumps({"type": "typing", "room": envelope["room"], "user": envelope["user"]})
    return orjson.dumps(event_body(envelope))


# -- envelopes and log entries -----------------------------------------------------------------


def envelope_tail(envelope: Envelope) -> bytes:
    """The envelope's JSON without `seq` and without its opening brace.

    The append script prepends `{"seq":N,` (or `{`) so the seq it assigns is inside the stored JSON.
    """
    return orjson.dumps(envelope.model_dump(mode="json", exclude={"seq"}, exclude_none=True))[1:]


def encode_envelope(envelope: Envelope) -> bytes:
    return orjson.dumps(envelope.model_dump(mode="json", exclude_none=True))


def decode_envelope(raw: bytes | str) -> Envelope:
    return Envelope.model_validate_json(raw)


def entry_envelope(fields: dict[bytes, bytes]) -> bytes:
    """The envelope JSON of a stream entry's field dict."""
    return fields[FIELD_EVENT]
