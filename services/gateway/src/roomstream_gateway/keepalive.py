"""WebSocket keepalive for every socket of the gateway: one timer, no task per socket.

websockets' own keepalive runs a task per connection (sleep, `ping()`, `wait_for` the pong):
at 10,000 idle sockets and a 20 s interval that is 500 pings/s, each with two task wake-ups, a
timeout handle, a future and an async context manager — most of an idle gateway's CPU
(docs/benchmarks.md, "Issue 12", idle sockets). Here the sockets are spread over
`interval / tick` slots; one timer callback pings one slot per tick (a constant 2-byte ping
frame written to the transport) and, `timeout` after each slot's ping, checks that every socket
of it has answered with a pong; one that has not is failed with 1011 "keepalive ping timeout"
and its TCP connection aborted after the close timeout, as websockets does.

A socket's pings are `interval` apart, so a peer that stops answering is closed within
`interval + timeout` (+ the close timeout for the TCP connection to go), as with websockets. A
socket whose pong is still outstanding at its next turn (`timeout > interval`) is not pinged
again until it answers or times out.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable

from websockets.frames import CloseCode
from websockets.protocol import OPEN

from .handshake import GatewayConnection

log = logging.getLogger(__name__)

PING_FRAME = b"\x89\x00"
"""An unmasked Ping frame with no payload (server frames are never masked; extensions such as
permessage-deflate do not apply to control frames): the same bytes for every socket."""

READ_TURN_S = 0.001
"""A due check waits this long: past the loop's cached time, so the timer fires on the next turn,
after the sockets were read."""


def slot_count(interval_s: float, tick_s: float) -> int:
    """Slots of the wheel: one per tick, at least one (pure)."""
    return max(1, math.ceil(interval_s / tick_s - 1e-9))


class Keepalive:
    """Pings every tracked socket once per `interval_s`, fails those that do not answer."""

    def __init__(
        self,
        interval_s: float,
        timeout_s: float,
        tick_s: float,
        on_timeout: Callable[[GatewayConnection], None] | None = None,
    ) -> None:
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.slots: list[dict[GatewayConnection, None]] = [
            {} for _ in range(slot_count(interval_s, tick_s))
        ]
        self.tick_s = interval_s / len(self.slots)
        """Exact, so that a socket's pings are `interval_s` apart."""
        self.on_timeout = on_timeout
        """Told of each socket closed for a missing pong (metrics, logs)."""
        self._added = 0
        self._turn = 0
        self._next_ping = 0.0
        self._waiting: deque[tuple[float, list[GatewayConnection]]] = deque()
        """(check time, sockets pinged) per pinged slot, oldest first (check times ascend)."""
        self._timer: asyncio.TimerHandle | None = None
        self._read_turn = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return sum(len(slot) for slot in self.slots)

    # -- tracking --------------------------------------------------------------------------------

    def add(self, conn: GatewayConnection) -> None:
        """Track a socket that completed its handshake (until its `connection_lost`). Slots are taken in turn, so a burst of
        connects spreads over all ticks instead of pinging together every interval."""
        if conn.connection_lost_waiter.done():
            return  # lost before its handler ran: its `connection_lost` will not remove it
        slot = self.slots[self._added % len(self.slots)]
        self._added += 1
        conn.ka_slot = slot
        conn.ka_sent = 0.0
        slot[conn] = None

    # -- the timer -------------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._next_ping = loop.time() + self.tick_s
        self._timer = loop.call_at(self._next_ping, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        if self._waiting and self._waiting[0][0] <= now and not self._read_turn:
            # Timers run before the loop reads its sockets: a pong that arrived while the loop
            # was busy (a long callback, a collection) is still unread. Check after one more
            # turn of I/O, or a stalled loop would close sockets that did answer.
            self._read_turn = True
            self._timer = loop.call_later(READ_TURN_S, self._tick)
            return
        self._read_turn = False
        try:
            self._check(now)
            if now >= self._next_ping:
                self._ping_slot(now)
                # On the grid (no drift); a loop that fell behind skips the missed ticks.
                behind = math.ceil((now - self._next_ping) / self.tick_s)
                self._next_ping += self.tick_s * max(1, behind)
        except Exception:  # a bug here must not end keepalive for every socket
            log.exception("keepalive tick failed")
        when = self._next_ping
        if self._waiting and self._waiting[0][0] < when:
            when = self._waiting[0][0]
        self._timer = loop.call_at(when, self._tick)

    def _ping_slot(self, now: float) -> None:
        slot = self.slots[self._turn]
        self._turn = (self._turn + 1) % len(self.slots)
        pinged: list[GatewayConnection] = []
        for conn in slot:
            if conn.ka_sent or conn.protocol.state is not OPEN:
                continue  # a pong still outstanding (checked at its time); closing
            transport = conn.transport
            if transport.is_closing():
                continue
            transport.write(PING_FRAME)
            conn.ka_sent = now
            pinged.append(conn)
        if pinged:
            self._waiting.append((now + self.timeout_s, pinged))

    def _check(self, now: float) -> None:
        waiting = self._waiting
        while waiting and waiting[0][0] <= now:
            _, pinged = waiting.popleft()
            for conn in pinged:
                # Answered (0.0), or gone (no slot): fine. Pinged again later: not due yet.
                sent = conn.ka_sent
                if sent and conn.ka_slot is not None and now - sent >= self.timeout_s - 1e-6:
                    self._fail(conn)

    def _fail(self, conn: GatewayConnection) -> None:
        """Close with 1011 like websockets' keepalive: the close frame, the half-close, and
        the TCP connection aborted if the peer does not close it within the close timeout."""
        conn.ka_sent = 0.0
        protocol = conn.protocol
        if protocol.state is not OPEN:
            return
        protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        try:
            conn.send_data()
        except Exception:  # the transport is gone already: connection_lost follows
            conn.transport.abort()
        assert self._loop is not None
        self._loop.call_later(conn.close_timeout or 0.0, _abort, conn)
        if self.on_timeout is not None:
            self.on_timeout(conn)


def _abort(conn: GatewayConnection) -> None:
    """The close timeout passed: drop the TCP connection unless it is closed already."""
    if not conn.connection_lost_waiter.done():
        conn.transport.abort()
