"""Per-connection state: kept small (`__slots__`) because a gateway holds many idle sockets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection

if TYPE_CHECKING:
    from .delivery import Peer, Sub


class Session:
    """One authenticated socket: who it is, its delivery state (`peer`), its typing clock."""

    __slots__ = (
        "closing",
        "conn",
        "id",
        "limited",
        "peer",
        "typing_at",
        "user",
    )

    def __init__(self, conn: ServerConnection, conn_id: str, user: str) -> None:
        self.conn = conn
        self.id = conn_id
        self.user = user
        self.peer: Peer | None = None
        """This socket in the delivery core (`Hub.add`): its subscriptions and held frames."""
        self.typing_at: dict[str, float] | None = None
        self.limited = 0
        """Consecutive rate-limited commands."""
        self.closing = False

    @property
    def rooms(self) -> dict[str, Sub]:
        """Rooms this socket receives (`room in session.rooms`)."""
        return self.peer.subs if self.peer is not None else {}
