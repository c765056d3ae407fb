"""Writing frames to sockets: the I/O side of the delivery core (`delivery.Core`).

The core decides which frames each socket gets; the hub writes them. All frames of one tail
batch go to each socket with a single `transport.write` (the bytes of a frame are built once per
event by the core). Only OPEN connections without negotiated extensions take that path; others
go through websockets' own `broadcast()`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from roomstream_contracts.ids import now_ms
from websockets.asyncio.server import broadcast
from websockets.protocol import OPEN

from .delivery import Core, Wire, wire
from .metrics import GatewayMetrics
from .session import Session

log = logging.getLogger(__name__)

__all__ = ["Hub", "Wire", "wire"]


async def _nothing(rooms: Iterable[str]) -> None:
    """No router (the tail reads every shard): the rooms' events already arrive."""


class Hub:
    """The delivery core of this gateway's sockets, and writing to them."""

    def __init__(self, max_buffer_bytes: int, on_slow: Callable[[Session], None]) -> None:
        self.core = Core()
        self.max_buffer_bytes = max_buffer_bytes
        self.on_slow = on_slow
        self.changed: Callable[[], None] | None = None
        """Called when subscriptions ended (the router leaves rooms nobody here is in)."""
        self.ensure: Callable[[Iterable[str]], Awaitable[None]] = _nothing
        """Wait until the rooms' events reach this gateway (the router); welcome and join call
        it after subscribing in the core, before reading the rooms' seqs."""

    @property
    def rooms(self) -> dict[str, object]:
        return self.core.rooms  # type: ignore[return-value]

    @property
    def users(self) -> dict[str, object]:
        return self.core.users  # type: ignore[return-value]

    @property
    def delivered(self) -> int:
        return self.core.delivered

    def add(self, session: Session) -> None:
        session.peer = self.core.add(session, session.user, welcoming=True)

    def remove(self, session: Session) -> None:
        if session.peer is not None:
            self.core.remove(session.peer)
            if self.changed is not None:
                self.changed()

    def unsubscribe(self, session: Session, room: str, at: int = 0) -> None:
        if session.peer is not None:
            self.core.unsubscribe(session.peer, room, at)
            if self.changed is not None:
                self.changed()

    @property
    def connections(self) -> int:
        return sum(len(s) for s in self.core.users.values())

    # -- writing -------------------------------------------------------------------------------

    def write(self, session: Session, frames: Sequence[Wire]) -> None:
        """Write frames to one socket now, in order (no await: ordering with other writes holds)."""
        if session.closing or not frames:
            return
        conn = session.conn
        protocol = conn.protocol
        if protocol.state is not OPEN:
            return
        if not protocol.extensions and conn.send_in_progress is None:
            transport = conn.transport
            if len(frames) == 1:
                transport.write(frames[0][1])
            else:
                transport.write(b"".join([f[1] for f in frames]))
        else:
            for payload, _ in frames:
                broadcast((conn,), payload, text=True)
        if conn.transport.get_write_buffer_size() > self.max_buffer_bytes:
            session.closing = True
            self.on_slow(session)

    def send(self, session: Session, payload: bytes) -> None:
        """Write one reply frame (ack, error, joined, ...)."""
        self.write(session, (wire(payload),))

    # -- delivery of a tail batch -------------------------------------------------------------

    def deliver(self, entries: Iterable[dict[bytes, bytes]]) -> tuple[int, int, list[int]]:
        """Deliver a batch of log entries (field dicts) in order: the core says what, the hub
        writes it. Returns (events delivered, frames written, event timestamps)."""
        errors: list[BaseException] = []
        out, events, frames, stamps = self.core.deliver(entries, errors)
        for exc in errors:
            log.error("hub: skipped an entry that could not be decoded", exc_info=exc)
        for peer, q in out.items():
            self.write(peer.owner, q)
        return events, frames, stamps

    def deliver_counted(self, entries: list[dict[bytes, bytes]], metrics: GatewayMetrics) -> None:
        """`deliver`, counted (frames, latency per event); a bug in delivery is logged, never
        raised: it must not stop delivery for everyone (the tail's, the router's batches)."""
        try:
            _, frames, stamps = self.deliver(entries)
        except Exception:
            log.exception("hub: delivery failed")
            return
        if frames:
            metrics.frames_out.add(frames)
            now = now_ms()
            record = metrics.delivery_latency.record
            for ts in stamps:
                record(max(0, now - ts) / 1000)
