"""Wiring and lifecycle: the WebSocket server, the tail, the heartbeat, signals.

One connection's life: handshake checks (`http`), authentication (header, query or `auth` frame),
`connected` appended, subscription to the user's rooms, `welcome`, then one command at a time
until the socket closes, then `disconnected` appended.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections import deque
from typing import Any, cast

from roomstream_contracts.codec import frame, parse_command
from roomstream_contracts.errors import CloseCode, ProtocolError
from roomstream_contracts.events import DisconnectedData, Envelope, EventKind
from roomstream_contracts.frames import AuthCommand, ReadCommand
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_contracts.tokens import TokenClaims
from roomstream_contracts.userstream import is_user_stream, read_markers_key, user_stream
from roomstream_kit import redis as kit_redis
from roomstream_kit.auth import (
    AuthError,
    KeysUnavailable,
    TokenVerifier,
    refuse_insecure_secret,
    service_token,
)
from roomstream_kit.eventlog import EventLog
from roomstream_kit.lifecycle import Lifecycle
from roomstream_kit.logs import setup_logging
from roomstream_kit.node import Heartbeat, node_started_envelope
from roomstream_kit.redis import redis_unavailable
from roomstream_kit.retry import Backoff, retry
from roomstream_kit.shutdown import arm_shutdown_deadline, bounded
from roomstream_kit.telemetry import setup_telemetry
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from .auth import token_from_request
from .commands import Commands
from .controlgap import ControlGap
from .handshake import GatewayConnection
from .http import HttpRoutes
from .hub import Hub, wire
from .keepalive import Keepalive
from .metrics import GatewayMetrics
from .pipeline import AppendPipe, PipedScript, PipedTailRedis, supported
from .reads import ReadMarkers, parse_markers, room_entries, unread_counts
from .routing import Router
from .session import Session
from .settings import GatewaySettings
from .tail import Tail
from .tokens import TokenLifecycle
from .upstream import Upstream
from .userstream import resume, user_since

log = logging.getLogger("roomstream_gateway")

BACKGROUND_STOP_S = 2.0
"""How long a stop waits for the tail and heartbeat tasks after cancelling them."""
DEREGISTER_TIMEOUT_S = 1.0
"""How long a stop tries to remove the node record."""


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.node = settings.node_name("gateway")
        self.keys = settings.keys
        self.redis = kit_redis.connect_pooled(settings, settings.redis_pool_size)
        # The append script and the tail's XREAD over pipelined connections of their own
        # (`pipeline`); redis-py for everything else, and for a cluster, TLS or a Unix socket.
        self.pipe: AppendPipe | None = None
        self.tail_redis: Any
        if supported(settings.redis_url, settings.redis_cluster):
            self.pipe = AppendPipe(settings.redis_url)
            self.eventlog = EventLog.from_settings(
                self.redis, settings, PipedScript(self.pipe), self.pipe.command, self.pipe.batch
            )
            self.tail_redis = PipedTailRedis(self.redis, settings.redis_url)
        else:
            self.eventlog = EventLog.from_settings(self.redis, settings)
            self.tail_redis = kit_redis.connect(settings)
        self.verifier = TokenVerifier(settings)
        self.metrics = GatewayMetrics()
        self.hub = Hub(settings.max_buffer_bytes, self._slow_reader)
        self.tail = Tail(
            self.tail_redis,
            self.keys,
            self.hub,
            self.metrics,
            block_ms=settings.tail_block_ms,
            count=settings.tail_count,
        )
        self.upstream = Upstream(
            settings.rooms_url,
            settings.history_url,
            service_token(settings),
            settings.http_timeout_s,
        )
        # Routed delivery (default): only the rooms of local sockets reach this gateway.
        self.router: Router | None = None
        if settings.delivery == "routed":
            self.router = Router(
                self.redis,
                settings.redis_url,
                self.keys,
                self.hub,
                self.metrics,
                self.upstream,
                ping_s=settings.pubsub_ping_s,
            )
            self.hub.ensure = self.router.ensure
            self.hub.changed = self.router.changed
        self.commands = Commands(
            settings,
            self.node,
            self.redis,
            self.eventlog,
            self.hub,
            self.upstream,
            self.metrics,
            self._close_soon,
        )
        self.tokens = TokenLifecycle(
            self.verifier,
            self.eventlog.batch,
            self.keys,
            self.metrics,
            lead_s=settings.token_refresh_lead_s,
            close=self._close_soon,
            send=self.hub.send,
        )
        self.commands.register(AuthCommand, self.tokens.refresh)
        self.commands.register(ReadCommand, ReadMarkers(self.commands, self.redis, self.keys).read)
        self.tail.control = self.tokens.apply
        if self.router is not None:
            self.router.control = self.tokens.apply
            self.router.control_resumed = ControlGap(
                self.redis, self.keys, self.router, self.tokens
            ).reconcile
        self.heartbeat = Heartbeat.from_settings(
            self.redis,
            settings,
            self.node,
            "gateway",
            stats=self._stats,
            address=f"ws://{_url_host(settings.advertised_host())}:{settings.port}/ws",
        )
        self.keepalive = Keepalive(
            settings.ping_interval_s,
            settings.ping_timeout_s,
            settings.keepalive_tick_s,
            self._keepalive_timeout,
        )
        """One timer pings every socket (websockets' keepalive task per socket is off)."""
        self.sessions: set[Session] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.life = Lifecycle("gateway", task_stop_s=BACKGROUND_STOP_S)
        """The kit's lifecycle (docs/architecture.md): the tail and the heartbeat supervised
        (a crash is logged, counted and restarted with backoff; `/readyz` is 503 meanwhile),
        the Redis check, the bounded stop."""
        self.life.check("redis", self._redis_ready)
        self.server: Server | None = None
        self._rate_mark: tuple[float, int] = (0.0, 0)
        self._unsent: deque[Envelope] = deque()
        """`disconnected` events whose append failed (Redis unavailable), to append later."""
        self._unsent_task: asyncio.Task[None] | None = None
        self._seq = 0

    # -- health and stats ---------------------------------------------------------------------

    async def ready(self) -> str | None:
        """Why this gateway is not ready (`/readyz` 503), or None: the lifecycle's first problem
        (a supervised task that is down, then its checks)."""
        problems = await self.life.problems()
        return problems[0] if problems else None

    async def _redis_ready(self) -> None:
        try:
            if await asyncio.wait_for(self.redis.ping(), 2.0):
                return
        except Exception as exc:  # TimeoutError is an OSError; LOADING / BUSY replies too
            if not redis_unavailable(exc):
                raise
        raise RuntimeError("redis does not answer")

    @property
    def essential(self) -> dict[str, asyncio.Task[None]]:
        """The supervised background tasks (the tail, the heartbeat), by name."""
        return {name: sup.task for name, sup in self.life.tasks.items()}

    def start_background(self) -> None:
        """Start the supervised background tasks (the tail must have sought its start first):
        the router's feed, or the tail of every shard with `ROOMSTREAM_DELIVERY=tail`."""
        if self.router is not None:
            self.life.spawn("router", self.router.run)
        else:
            self.life.spawn("tail", self.tail.run)
        self.life.spawn("heartbeat", self.heartbeat.run)

    def _stats(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        now, delivered = loop.time(), self.hub.delivered
        last_t, last_n = self._rate_mark
        rate = (delivered - last_n) / (now - last_t) if last_t and now > last_t else 0.0
        self._rate_mark = (now, delivered)
        return {
            "connections": len(self.sessions),
            "rooms": sum(1 for room in self.hub.rooms if not is_user_stream(room)),
            "messages_per_s": round(rate, 1),
            # Events delivered since start: the monitor scrapes this gateway's delivery latency
            # only when it moved (an idle gateway is not scraped every stats interval).
            "delivered": delivered,
        }

    # -- closing sockets ----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _close_soon(self, session: Session, code: int, reason: str) -> None:
        session.closing = True
        self._spawn(self._close(session.conn, code, reason, self.settings.close_timeout_s))

    def _slow_reader(self, session: Session) -> None:
        self.metrics.slow_consumers.add(1)
        log.warning("slow reader closed", extra={"conn": session.id, "user": session.user})
        self._spawn(
            self._close(
                session.conn,
                CloseCode.TRY_AGAIN_LATER,
                "outbound buffer full",
                self.settings.slow_close_timeout_s,
            )
        )

    def _keepalive_timeout(self, conn: GatewayConnection) -> None:
        self.metrics.keepalive_timeouts.add(1)

    @staticmethod
    async def _close(conn: ServerConnection, code: int, reason: str, within_s: float) -> None:
        """Close with `code`; abort the TCP connection if the close does not complete."""
        try:
            await asyncio.wait_for(conn.close(code, reason), within_s)
        except (TimeoutError, OSError):
            conn.transport.abort()

    # -- one connection -----------------------------------------------------------------------

    async def handler(self, conn: ServerConnection) -> None:
        # Kept alive from here on; the connection leaves the keepalive when it is lost.
        self.keepalive.add(cast(GatewayConnection, conn))  # `create_connection` below
        claims = await self._authenticate(conn)
        if claims is None:
            return
        request = conn.request
        assert request is not None
        self._seq += 1
        # Connection ids carry the incarnation, never reused by a later process life (a pid is:
        # pid 1 in every container); the rooms projection keeps a closed id closed for good.
        session = Session(conn, f"{self.node}:{self.incarnation:x}:{self._seq:x}", claims.sub)
        # Tracked before the revocation read: a revocation appended after that read still
        # reaches this socket through the log.
        self.tokens.track(session, claims)
        try:
            if await self.tokens.revoked_at_connect(session, claims):
                self.tokens.forget(session)
                self.metrics.auth_failures.add(1, {"reason": "revoked"})
                await conn.close(CloseCode.NOT_AUTHENTICATED, "token revoked")
                return
            await self._welcome(session, user_since(request.path))
        except Exception as exc:
            self.tokens.forget(session)
            self.hub.remove(session)
            if redis_unavailable(exc):
                await conn.close(CloseCode.TRY_AGAIN_LATER, "redis unavailable")
            else:
                log.exception("welcome failed", extra={"conn": session.id, "user": session.user})
                await conn.close(CloseCode.INTERNAL_ERROR, "internal error")
            return
        self.sessions.add(session)
        self.tokens.welcomed(session)
        self.metrics.connections.add(1)
        try:
            # `recv()` in a loop, not `async for`: no async generator kept per idle socket.
            while not session.closing:
                raw = await conn.recv()
                if session.closing:
                    break
                await self.commands.handle(session, raw)
        except ConnectionClosed:
            pass
        finally:
            if session.closing:
                # A close with its own code (1008, 1013) is under way in another task: let it
                # finish, or returning from the handler would close with 1000 first.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.wait_closed(), self.settings.close_timeout_s + 1)
            self.sessions.discard(session)
            self.tokens.forget(session)
            self.hub.remove(session)
            self.metrics.connections.add(-1)
            if session.user not in self.hub.users:
                self.commands.buckets.pop(session.user, None)
            await self._disconnected(session)

    async def _authenticate(self, conn: ServerConnection) -> TokenClaims | None:
        """The socket's verified claims, or None once it is closed (4401, 4408, 1013). A
        coroutine of its own so that the token and the auth frame are freed when it returns
        (the handler's frame lives as long as the socket)."""
        request = conn.request
        assert request is not None
        token = token_from_request(request.headers, request.path)
        if token is None:
            try:
                raw = await asyncio.wait_for(conn.recv(), self.settings.auth_timeout_s)
            except TimeoutError:
                self.metrics.auth_failures.add(1, {"reason": "timeout"})
                await conn.close(CloseCode.AUTH_TIMEOUT, "authentication timeout")
                return None
            except ConnectionClosed:
                return None
            try:
                cmd = parse_command(raw)
            except ProtocolError:
                cmd = None
            token = cmd.token if isinstance(cmd, AuthCommand) else ""
        try:
            claims = await self.verifier.averify(token)
        except AuthError as exc:
            self.metrics.auth_failures.add(1, {"reason": "token"})
            await conn.close(CloseCode.NOT_AUTHENTICATED, str(exc)[:100])
            return None
        except KeysUnavailable:  # the issuer's JWKS is out of reach: not the client's fault
            self.metrics.auth_failures.add(1, {"reason": "jwks"})
            await conn.close(CloseCode.TRY_AGAIN_LATER, "token keys unavailable")
            return None
        # The handshake's headers are not needed any more: free them (memory per idle socket).
        request.headers.clear()
        if conn.response is not None:
            conn.response.headers.clear()
        return claims

    async def _welcome(self, session: Session, since: int | None = None) -> None:
        """Append `connected`, subscribe to the user's rooms, then read their seqs: welcome."""
        await self.eventlog.append(self._event(session, EventKind.CONNECTED, {}))
        try:
            await self._subscribe_and_welcome(session, since)
        except BaseException:
            # `connected` is in the log: its `disconnected` must be too, or presence keeps a
            # connection that never existed.
            await self._disconnected(session)
            raise

    async def _subscribe_and_welcome(self, session: Session, since: int | None = None) -> None:
        """Subscribe (held) before reading the seqs, so nothing falls between; the core drops
        live frames at or below the welcome seqs (the tail may lag behind them)."""
        self.hub.add(session)
        peer = session.peer
        assert peer is not None
        # The read model of the user's rooms lags the log: rooms the tail granted the user
        # (room_created, member_joined) before this socket registered are added from the core.
        batch = self.eventlog.batch
        (listed,) = await batch([("SMEMBERS", self.keys.user_rooms(session.user))])
        rooms = sorted(
            {kit_redis.text(m) for m in listed} | set(self.hub.core.recent_rooms(session.user))
        )
        stream = user_stream(session.user)  # the user's own stream: subscribed like a room
        rooms.append(stream)
        self.hub.core.begin_welcome(peer, rooms)
        await self.hub.ensure(rooms)  # the rooms' events reach this gateway before seqs are read
        seqs: list[Any] = []
        markers: dict[str, int] = {}
        if rooms:
            reads: list[tuple[Any, ...]] = []
            for room in rooms:
                shard = self.keys.room_shard(room)
                reads.append(("HGET", self.keys.seq(shard), room))
                reads.append(("HEXISTS", self.keys.kinds(shard), room))
                reads.append(("SISMEMBER", self.keys.roster(room), session.user))
            reads.append(("HGETALL", read_markers_key(self.keys, session.user)))
            replies = await batch(reads)
            markers = parse_markers(kit_redis.as_mapping(replies[-1]))
            # The user's rooms come from a read model the projection updates later: a room whose
            # roster (the membership authority) no longer has the user is not subscribed.
            still: list[str] = []
            for i, room in enumerate(rooms):
                seq, seeded, member = replies[3 * i : 3 * i + 3]
                if seeded and not member:
                    self.hub.unsubscribe(session, room)
                    continue
                still.append(room)
                seqs.append(seq)
            rooms = still
        positions = {room: int(s or 0) for room, s in zip(rooms, seqs, strict=True)}
        user_position, missed = await resume(
            self.redis, self.keys, stream, since, positions.get(stream, 0)
        )
        unread = await unread_counts(self.redis, self.keys, session.user, markers, positions)
        kept, live = self.hub.core.finish_welcome(peer, positions)
        kept.pop(stream, None)
        welcome = frame(
            "welcome",
            conn=session.id,
            user=session.user,
            node=self.node,
            rooms=room_entries(kept, unread),
            heartbeat=self.settings.ping_interval_s,
            protocol=1,
            user_stream=user_position,
        )
        self.hub.write(session, [wire(welcome), *missed, *live])

    def _event(self, session: Session, kind: EventKind, data: dict[str, Any]) -> Envelope:
        return Envelope(
            id=new_event_id(),
            kind=kind,
            user=session.user,
            node=self.node,
            conn=session.id,
            ts=now_ms(),
            data={**data, "incarnation": self.incarnation},
        )

    @property
    def incarnation(self) -> int:
        assert self.heartbeat.incarnation is not None, "start() registers the incarnation"
        return self.heartbeat.incarnation

    async def start_incarnation(self) -> None:
        """Claim this process's incarnation and append `node_started` before accepting sockets:
        the rooms service retires the connections of the previous process of this node id (a
        crash) at once. Retried while Redis is unavailable (nothing can be served without it)."""

        async def register() -> None:
            incarnation = await self.heartbeat.register()
            await self.eventlog.append(node_started_envelope(self.node, "gateway", incarnation))

        await retry(
            register,
            what="node registration",
            retry_if=redis_unavailable,
            initial_s=0.1,
            max_s=2.0,
            logger=log,
        )

    async def _disconnected(self, session: Session) -> None:
        conn = session.conn
        data = DisconnectedData(code=conn.close_code, reason=conn.close_reason or "").model_dump()
        envelope = self._event(session, EventKind.DISCONNECTED, data)
        try:
            await self.eventlog.append(envelope)
        except Exception as exc:
            if not redis_unavailable(exc):
                raise
            # Without it presence would keep this socket for the rest of this process life:
            # append it once Redis answers again (a duplicate is harmless: idempotent by conn).
            log.warning("could not append disconnected: %s", exc, extra={"conn": session.id})
            self._unsent.append(envelope)
            if self._unsent_task is None or self._unsent_task.done():
                self._unsent_task = asyncio.create_task(self._flush_unsent(), name="unsent")

    async def _flush_unsent(self) -> None:
        """Append the `disconnected` events that failed, oldest first, backing off while Redis
        is unavailable (one task for all of them, however many sockets closed meanwhile)."""
        backoff = Backoff(0.2, 5.0)
        while self._unsent:
            try:
                await self.eventlog.append(self._unsent[0])
            except Exception as exc:
                if redis_unavailable(exc):
                    await asyncio.sleep(backoff.next_delay())
                    continue
                log.exception("dropping an unsendable disconnected event")
            self._unsent.popleft()
            backoff.reset()
        log.info("appended the disconnected events held during the redis outage")

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        s = self.settings
        if self.router is not None:
            await self.router.start()
        else:
            await self.tail.seek_end()
        await self.start_incarnation()
        self.start_background()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self.server = await serve(
            self.handler,
            s.host,
            s.port,
            process_request=HttpRoutes(s, self.ready),
            compression="deflate" if s.compression == "deflate" else None,
            max_size=s.max_frame_bytes,
            max_queue=s.max_queue,
            backlog=s.listen_backlog,
            write_limit=s.max_buffer_bytes,
            ping_interval=None,  # `self.keepalive` pings: one timer instead of a task a socket
            close_timeout=s.close_timeout_s,
            server_header=None,
            create_connection=GatewayConnection,  # an HTTP answer to `POST /ws` & co.
        )
        # Everything allocated so far (modules, settings, telemetry, ~45k objects) lives as long
        # as the process: out of the collector's reach, so that a full collection walks only the
        # connections' objects (it pauses delivery for every socket while it runs).
        gc.collect()
        gc.freeze()
        self.keepalive.start()
        log.info("gateway listening", extra={"port": s.port, "node_id": self.node})
        await stop.wait()
        log.info("gateway stopping")
        arm_shutdown_deadline(s.shutdown_deadline_s)
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop accepting, close every socket with 1012 (their `disconnected` is appended by
        their handlers), remove the node record."""
        assert self.server is not None
        # websockets closes every open socket — welcomed or still authenticating — with 1012
        # and refuses handshakes in progress with 503, then waits for every handler to return:
        # handlers append their `disconnected` while the Redis clients are still open. (Closing
        # only welcomed sessions left the others' handlers to be cancelled at loop teardown,
        # where their last append could hang the exit.)
        self.server.close(
            close_connections=True, code=CloseCode.SERVICE_RESTART, reason="gateway restarting"
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.server.wait_closed(), self.settings.close_timeout_s + 5)
        for conn in list(self.server.connections):  # still open past the bound: drop them
            conn.transport.abort()
        self.keepalive.stop()
        self.tokens.stop()
        await self.stop_background()
        # Removing the node record is a courtesy (the monitor notices a missing heartbeat
        # anyway): a Redis that does not answer must not hold the stop.
        await bounded(self.heartbeat.deregister(), DEREGISTER_TIMEOUT_S, "deregister")
        await self.upstream.aclose()
        await self.commands.aclose()
        if self.pipe is not None:
            self.pipe.close()
        await self.redis.aclose()
        await self.tail_redis.aclose()

    async def stop_background(self) -> None:
        """Stop the tail and the heartbeat loop, bounded: a task that swallows its cancellation
        (a library's `wait_for` on Python 3.11) cannot hold the stop."""
        self.tail.stop()
        if self.router is not None:
            self.router.stop()
        await self.life.stop_tasks()


def _url_host(host: str) -> str:
    """A host as it goes into a URL (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def main_async() -> None:
    settings = GatewaySettings()
    refuse_insecure_secret(settings, "gateway")
    node = settings.node_name("gateway")
    setup_logging("gateway", node, settings.log_level, settings.log_format)
    setup_telemetry("gateway", node)
    await Gateway(settings).run()
