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
    NODE_STARTED = "node_started"
    # Token lifecycle (sharded by user; every gateway acts on them for its own sockets).
    USER_KICKED = "user_kicked"
    TOKENS_REVOKED = "tokens_revoked"
    # A user's own stream (`roomstream_contracts.userstream`): sequenced per user.
    USER_EVENT = "user_event"
    READ = "read"


USER_STREAM_KINDS: frozenset[EventKind] = frozenset({EventKind.USER_EVENT, EventKind.READ})
"""Kinds of a user's stream: `room` is the stream's internal key (`~USER`, never a room id), `seq`
that stream's gapless seq, delivered to every socket of the user as `user` frames."""


SEQUENCED_KINDS: frozenset[EventKind] = (
    frozenset(
        {
            EventKind.MESSAGE,
            EventKind.MESSAGE_EDITED,
            EventKind.MESSAGE_DELETED,
            EventKind.MEMBER_JOINED,
            EventKind.MEMBER_LEFT,
            EventKind.ROOM_CREATED,
        }
    )
    | USER_STREAM_KINDS
)
"""Kinds that get the next seq of their stream: a room's history, or a user's stream."""

DELIVERED_KINDS: frozenset[EventKind] = SEQUENCED_KINDS | {
    EventKind.ONLINE,
    EventKind.OFFLINE,
    EventKind.TYPING,
}
"""Kinds that gateways push to the sockets subscribed to the event's room."""

USER_CONTROL_KINDS: frozenset[EventKind] = frozenset(
    {EventKind.USER_KICKED, EventKind.TOKENS_REVOKED}
)
"""Events about one user (`user` of the envelope, no room, sharded by user) that every gateway
tails and applies to that user's local sockets: close them all (`user_kicked`, 1008) or those
whose token was issued before `data.before` (`tokens_revoked`, 4401)."""


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
    """A socket authenticated on `node` (envelope `node`, `conn`, `user`), during the node's
    process life `incarnation` (see `NodeStartedData`; absent from events of older versions)."""

    incarnation: int | None = None


class DisconnectedData(_Data):
    code: int | None = None
    reason: str = ""
    incarnation: int | None = None


class NodeFailedData(_Data):
    """A node stopped heartbeating without deregistering; its connections are gone."""

    node: str
    last_seen_ms: int | None = None
    incarnation: int | None = None
    """The incarnation that stopped heartbeating: only its connections (and older ones) are gone;
    a newer incarnation of the same node id keeps its own. None: every connection of the node
    opened before the event's `ts` (events of older versions)."""


class NodeStartedData(_Data):
    """A node began a new process life (envelope `node`; sharded by `node:ID` like node_failed).

    `incarnation` identifies the process life: an integer that grows with every start of the same
    node id (`roomstream_kit.node`: the start time in ms, made strictly greater than the previous
    incarnation's in Redis). A new incarnation means every older one of that node is dead: their
    connections are retired at once, without waiting for the monitor's timeout.
    """

    node: str
    incarnation: int
    kind: str = ""


class UserKickedData(_Data):
    """Every socket of the envelope's `user`, on every gateway, is closed with 1008."""

    by: str | None = None
    reason: str = ""


class TokensRevokedData(_Data):
    """Tokens of the envelope's `user` with `iat` < `before` (seconds since the epoch) are no
    longer accepted; sockets authenticated with one are closed with 4401."""

    before: float
    by: str | None = None


class UserEventData(_Data):
    """An event addressed to the envelope's `user` (published through the rooms API,
    `POST /users/{user}/events`): the application's own `kind` and `data`; `by` the publisher."""

    kind: str
    data: dict[str, Any] = Field(default_factory=dict)
    by: str | None = None


class ReadData(_Data):
    """The envelope's `user` read `room` up to `seq` (the `read` command; max wins)."""

    room: str
    seq: int


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
    EventKind.NODE_STARTED: NodeStartedData,
    EventKind.USER_KICKED: UserKickedData,
    EventKind.TOKENS_REVOKED: TokensRevokedData,
    EventKind.USER_EVENT: UserEventData,
    EventKind.READ: ReadData,
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
