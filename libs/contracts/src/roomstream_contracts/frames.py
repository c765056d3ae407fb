"""Client and server frames of protocol version 1 (PROTOCOL.md).

Client → server frames are *commands*; they are validated strictly (a string where an int belongs
is a `bad_request`) and unknown fields are ignored. Server → client frames are built by the
gateway; their models here are the reference for `docs/` and for the Python client.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .ids import ClientMessageId, RoomId, SafeStr

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 64 * 1024
"""Default largest client frame; larger ones close the socket with 1009."""
MAX_TEXT_CHARS = 8000
"""Default longest message text; longer ones get `too_large`."""
HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 200
AUTH_FRAME_TIMEOUT_S = 5.0
MAX_SEQ = 2**62 - 1
"""Largest seq a command may name (seqs are BIGINT in Postgres; larger is a `bad_request`)."""


class _Command(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    ref: str | None = Field(default=None, max_length=256)


# -- client → server ---------------------------------------------------------------------------


class AuthCommand(_Command):
    type: Literal["auth"]
    token: str


class JoinCommand(_Command):
    type: Literal["join"]
    room: RoomId
    since: Annotated[int, Field(ge=0, le=MAX_SEQ)] | None = None


class LeaveCommand(_Command):
    type: Literal["leave"]
    room: RoomId


class SendCommand(_Command):
    type: Literal["send"]
    room: RoomId
    text: SafeStr
    id: ClientMessageId


class EditCommand(_Command):
    type: Literal["edit"]
    room: RoomId
    seq: Annotated[int, Field(ge=1, le=MAX_SEQ)]
    text: SafeStr


class DeleteCommand(_Command):
    type: Literal["delete"]
    room: RoomId
    seq: Annotated[int, Field(ge=1, le=MAX_SEQ)]


class TypingCommand(_Command):
    type: Literal["typing"]
    room: RoomId


class HistoryCommand(_Command):
    type: Literal["history"]
    room: RoomId
    before: Annotated[int, Field(ge=1, le=MAX_SEQ)] | None = None
    limit: Annotated[int, Field(ge=1, le=HISTORY_MAX_LIMIT)] = HISTORY_DEFAULT_LIMIT


class PresenceCommand(_Command):
    type: Literal["presence"]
    room: RoomId


class PingCommand(_Command):
    type: Literal["ping"]


class ReadCommand(_Command):
    """Extension: the user read `room` up to `seq` (its read marker; max wins). The other sockets
    of the user get a `user` frame of kind `read`; `welcome` carries `unread` per room."""

    type: Literal["read"]
    room: RoomId
    seq: Annotated[int, Field(ge=0, le=MAX_SEQ)]


Command = Annotated[
    AuthCommand
    | JoinCommand
    | LeaveCommand
    | SendCommand
    | EditCommand
    | DeleteCommand
    | TypingCommand
    | HistoryCommand
    | PresenceCommand
    | PingCommand
    | ReadCommand,
    Field(discriminator="type"),
]
"""Any client frame, told apart by its `type`."""

COMMAND_TYPES: dict[str, type[_Command]] = {
    "auth": AuthCommand,
    "join": JoinCommand,
    "leave": LeaveCommand,
    "send": SendCommand,
    "edit": EditCommand,
    "delete": DeleteCommand,
    "typing": TypingCommand,
    "history": HistoryCommand,
    "presence": PresenceCommand,
    "ping": PingCommand,
    "read": ReadCommand,
}


# -- server → client ---------------------------------------------------------------------------


class _Frame(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class RoomPosition(BaseModel):
    seq: int
    unread: int | None = None
    """Extension: `message` events after the user's read marker of the room that are not
    deleted, counted up to the gateway's cap (present only for rooms with a read marker)."""


class UserStreamPosition(BaseModel):
    """Extension: where the user's own stream stands at the welcome (`seq`); when the client
    resumed it (`user_since`), whether every event after that still existed (`recovered`), how
    many follow the welcome as `user` frames (`missed`), and the first seq still available."""

    seq: int
    recovered: bool | None = None
    missed: int | None = None
    first_available: int | None = None


class WelcomeFrame(_Frame):
    type: Literal["welcome"] = "welcome"
    conn: str
    user: str
    node: str
    rooms: dict[str, RoomPosition]
    heartbeat: float
    protocol: int = PROTOCOL_VERSION
    user_stream: UserStreamPosition | None = None
    """Extension: the user's own stream (per-user events and read markers)."""


class EventFrame(_Frame):
    """A room event. `seq` is absent for `online` / `offline` (they are not history)."""

    type: Literal["event"] = "event"
    room: str
    seq: int | None = None
    id: str
    kind: str
    user: str | None
    ts: int
    data: dict[str, Any]


class UserFrame(_Frame):
    """Extension: an event of the user's own stream, on every socket of the user. `seq` is the
    stream's gapless seq; `kind` the publisher's kind, or `read` (a read marker: `data` is
    `{"room", "seq"}`); `by` who published it (user events)."""

    type: Literal["user"] = "user"
    seq: int
    id: str
    kind: str
    ts: int
    data: dict[str, Any]
    by: str | None = None


class AckFrame(_Frame):
    type: Literal["ack"] = "ack"
    ref: str | None = None
    room: str | None = None
    seq: int | None = None
    id: str | None = None
    exp: float | None = None
    """Extension, reply to an `auth` frame after authentication (a token refresh): the `exp`
    of the socket's new token, now its expiry."""


class ErrorFrame(_Frame):
    type: Literal["error"] = "error"
    ref: str | None = None
    code: str
    message: str
    retry_after: int | None = None


class JoinedFrame(_Frame):
    """Reply to `join`. `first_available` (extension) says from which seq on the room's events
    still exist when `recovered` is false."""

    type: Literal["joined"] = "joined"
    ref: str | None = None
    room: str
    seq: int
    recovered: bool
    missed: int
    first_available: int | None = None


class HistoryFrame(_Frame):
    type: Literal["history"] = "history"
    ref: str | None = None
    room: str
    events: list[EventFrame]
    more: bool


class PresenceEntry(BaseModel):
    user: str
    connections: int


class PresenceFrame(_Frame):
    type: Literal["presence"] = "presence"
    ref: str | None = None
    room: str
    users: list[PresenceEntry]


class TypingFrame(_Frame):
    type: Literal["typing"] = "typing"
    room: str
    user: str


class RefreshFrame(_Frame):
    """Extension: the socket's token expires soon (`exp`, seconds since the epoch, in
    `expires_in` s); send `{"type": "auth", "token": ...}` with a fresh token of the same user
    before then, or the socket is closed with 4401."""

    type: Literal["refresh"] = "refresh"
    exp: float
    expires_in: float


class PongFrame(_Frame):
    type: Literal["pong"] = "pong"
    ref: str | None = None


ServerFrame = Annotated[
    WelcomeFrame
    | EventFrame
    | UserFrame
    | AckFrame
    | ErrorFrame
    | JoinedFrame
    | HistoryFrame
    | PresenceFrame
    | TypingFrame
    | RefreshFrame
    | PongFrame,
    Field(discriminator="type"),
]
