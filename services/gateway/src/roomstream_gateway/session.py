"""Per-connection state: kept small (`__slots__`) because a gateway holds many idle sockets."""

from __future__ import annotations

from websockets.asyncio.server import ServerConnection

Held = list[tuple[int | None, bytes]]
"""Frames of a room kept back while a `join`/`welcome` is in progress: (seq, payload)."""


class Session:
    """One authenticated socket: who it is, which rooms it receives, what is held back."""

    __slots__ = (
        "closing",
        "conn",
        "held",
        "id",
        "limited",
        "rooms",
        "typing_at",
        "user",
    )

    def __init__(self, conn: ServerConnection, conn_id: str, user: str) -> None:
        self.conn = conn
        self.id = conn_id
        self.user = user
        self.rooms: dict[str, int] = {}
        """Rooms this socket receives → the seq after which it got every event of the room live
        (so a later `join` with `since` replays only what the socket never had)."""
        self.held: dict[str, Held] | None = None
        """room → frames delivered while the room's reply (`welcome` / `joined`) is pending."""
        self.typing_at: dict[str, float] | None = None
        self.limited = 0
        """Consecutive rate-limited commands."""
        self.closing = False

    def hold(self, room: str) -> None:
        if self.held is None:
            self.held = {}
        self.held.setdefault(room, [])

    def release_all(self) -> list[Held]:
        """Stop holding every room; their held frames."""
        held, self.held = self.held, None
        return list(held.values()) if held else []

    def release(self, room: str) -> Held:
        """Stop holding `room`; the frames held for it, in delivery order."""
        if self.held is None:
            return []
        frames = self.held.pop(room, [])
        if not self.held:
            self.held = None
        return frames
