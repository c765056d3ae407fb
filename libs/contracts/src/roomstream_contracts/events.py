"""Domain events: the envelope every log entry carries, and the data of each event kind.

Every client action and every state change is one `Envelope` appended to a shard stream of the log
(see `streams`). Events of a *sequenced* kind get the room's next gapless `seq` in the same atomic
step as the append; the others (presence, typing, connection and node events) have no `seq` and are
not part of a room's history.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .ids import SafeStr, UserId

SCHEMA_VERSION = 1
"""Version of the envelope layout. Consumers accept every version they know and skip newer ones."""


class EventKind(StrEnum):
    # Room history: these carry a gapless per-room seq.
    MESSAGE = "message"
    MESSAGE_EDITED = "message_edited"
    MESSAGE_DELETED = "message_deleted"
    MEMBER_JOINED = "member_joined"
    MEMBER_LEFT = "member_left"
    ROOM_CREATED = "room_created"
    # Live room events without seq.
    ONLINE = "online"
    OFFLINE = "offline"
    TYPING = "typing"
    # Cluster events, never delivered to clients.
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    NODE_FAILED = "node_failed"


SEQUENCED_KINDS: frozenset[EventKind] = frozenset(
    {
        EventKind.MESSAGE,
        EventKind.MESSAGE_EDITED,
        EventKind.MESSAGE_DELETED,
        EventKind.MEMBER_JOINED,
        EventKind.MEMBER_LEFT,
        EventKind.ROOM_CREATED,
    }
)
"""Kinds that belong to a room's history and get its next seq."""

DELIVERED_KINDS: frozenset[EventKind] = SEQUENCED_KINDS | {
    EventKind.ONLINE,
    EventKind.OFFLINE,
    EventKind.TYPING,
}
"""Kinds that gateways push to the sockets subscribed to the event's room."""


class _Data(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class MessageData(_Data):
    text: SafeStr
    client_id: SafeStr


class MessageEditedData(_Data):
    target_seq: int
    text: SafeStr


class MessageDeletedData(_Data):
    target_seq: int


class MemberJoinedData(_Data):
    """`user` of the envelope is the member; `by` is who added them (themselves when joining)."""

    by: str | None = None


class MemberLeftData(_Data):
    """`user` of the envelope is the former member; `by` is who removed them."""

    by: str | None = None


class RoomCreatedData(_Data):
    name: SafeStr
    kind: str = Field(pattern="^(public|private)$")
    owner: UserId
    members: list[UserId] = Field(default_factory=list)


class PresenceData(_Data):
    """Data of `online` / `offline`: how many connections the user has left across all nodes."""

    connections: int = 0


class ConnectedData(_Data):
    """A socket authenticated on `node` (envelope `node`, `conn`, `user`)."""


class DisconnectedData(_Data):
    code: int | None = None
    reason: str = ""


class NodeFailedData(_Data):
    """A node stopped heartbeating without deregistering; its connections are gone."""

    node: str
    last_seen_ms: int | None = None


DATA_MODELS: dict[EventKind, type[_Data]] = {
    EventKind.MESSAGE: MessageData,
    EventKind.MESSAGE_EDITED: MessageEditedData,
    EventKind.MESSAGE_DELETED: MessageDeletedData,
    EventKind.MEMBER_JOINED: MemberJoinedData,
    EventKind.MEMBER_LEFT: MemberLeftData,
    EventKind.ROOM_CREATED: RoomCreatedData,
    EventKind.ONLINE: PresenceData,
    EventKind.OFFLINE: PresenceData,
    EventKind.TYPING: _Data,
    EventKind.CONNECTED: ConnectedData,
    EventKind.DISCONNECTED: DisconnectedData,
    EventKind.NODE_FAILED: NodeFailedData,
}
"""The data model of each kind, for consumers that want typed access (`Envelope.typed_data`)."""


class Envelope(BaseModel):
    """One event as it is stored in the log.

    `room` is set for room events; connection and node events have none and are sharded by user or
    node instead. `trace` holds the W3C trace context (`traceparent`, `tracestate`) of the action
    that caused the event, so consumers continue the producer's trace.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int = SCHEMA_VERSION
    id: str
    kind: EventKind
    room: str | None = None
    user: str | None = None
    node: str | None = None
    conn: str | None = None
    ts: int
    seq: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    trace: dict[str, str] = Field(default_factory=dict)

    @property
    def sequenced(self) -> bool:
        return self.kind in SEQUENCED_KINDS

    def typed_data(self) -> _Data:
        """`data` validated against the model of this kind."""
        return DATA_MODELS[self.kind].model_validate(self.data)
