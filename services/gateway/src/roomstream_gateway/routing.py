"""Routed delivery: this gateway receives the events of the rooms its sockets are in, and nothing
else (replaces the tail of every shard, `tail`).

The append script publishes every event of a room on the room's shard channel (`SPUBLISH`, the
channel named like the room's recent stream, so it hashes to the room's slot on a Redis Cluster)
and the events every gateway needs whatever its rooms — grants (`member_joined`, `room_created`),
`user_kicked`, `tokens_revoked` — on the control channel (classic `PUBLISH`, which a cluster
broadcasts). The router keeps one `SSUBSCRIBE` per room that has a local subscriber in the
delivery core (`Core.opened` / `Core.emptied`), one pub/sub connection per Redis node (a single
server: one), plus the control subscription.

No event is lost when a subscription starts, ends or its connection drops, because every room
has a gapless seq: per room the router knows the last seq it handed to the core (`Feed.last`).
A subscription counts only once Redis confirmed it; then the room's current seq is read and the
events in (last, current] are read from the room's recent stream (`replay.fetch`: Redis, then
history). A seq that skips ahead on the channel (a message lost by a slow or cut connection)
triggers the same fill before it is delivered. Live messages wait in the feed's queue while it
fills, so the core always sees a room's events in seq order. Events without a seq (typing,
online / offline) pass through as they come. A dropped connection marks its feeds unsynced,
reconnects with back-off and resubscribes them: each fills from its last seq. The control
channel has no seq: once it is subscribed again, `controlgap` reconciles the grants, kicks and
revocations it may have lost from state. Every pub/sub connection is pinged (`ping_s`): one
that looks alive but does not answer is dropped and heals the same way.

The replies of one read from the socket are handed to the core as one batch (one
`transport.write` per socket per batch, as the tail did), parsed by hiredis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import hiredis
import orjson
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from roomstream_contracts.streams import FIELD_EVENT, FIELD_KIND, FIELD_ROOM, StreamKeys
from roomstream_kit.redis import AnyRedis, redis_unavailable
from roomstream_kit.retry import Backoff, always, retry

from .delivery import created_members
from .hub import Hub
from .metrics import GatewayMetrics
from .pipeline import keepalive
from .replay import fetch
from .upstream import Upstream

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0
MAX_STRICT_TRIES = 8
"""Fills of a room retried this often before a seq that cannot be read is skipped (logged)."""
ENSURE_TIMEOUT_S = 5.0
"""A welcome or join waits this long for its rooms' subscriptions, then fails `unavailable`."""
BACKOFF_MAX_S = 2.0
RESUME_TIMEOUT_S = 30.0
"""The reconcile after a control-channel drop gets this long (a Redis connection that hangs
must not hold the one way back for good); then it starts over, resubscription included."""
_GRANTS = (b"member_joined", b"room_created")
_TOKENS = (b"user_kicked", b"tokens_revoked")

Entry = dict[bytes, bytes]
Addr = tuple[str, int]


def parse_note(note: bytes) -> tuple[bytes, int | None, bytes]:
    """A published message `KIND SEQ BODY` → (kind, seq or None, envelope JSON)."""
    kind, _, rest = note.partition(b" ")
    seq_b, _, body = rest.partition(b" ")
    return kind, (None if seq_b == b"-" else int(seq_b)), body


class Feed:
    """One room's subscription on this gateway."""

    __slots__ = (
        "again",
        "channel",
        "floor",
        "last",
        "link",
        "queue",
        "room",
        "room_b",
        "task",
        "waiters",
    )

    def __init__(self, room: str, channel: bytes) -> None:
        self.room = room
        self.room_b = room.encode()
        self.channel = channel
        self.last: int | None = None
        """Highest seq handed to the core (None: not positioned yet)."""
        self.queue: list[tuple[int | None, Entry]] | None = []
        """Messages received while not in sync (subscribing, filling); None when in sync."""
        self.link: Link | None = None
        self.task: asyncio.Task[None] | None = None
        self.again = False
        """Asked to sync again while a sync ran (its connection dropped meanwhile)."""
        self.floor: int | None = None
        """Fill again from this seq (a subscriber positioned below `last` appeared)."""
        self.waiters: list[asyncio.Future[None]] = []


class Link(asyncio.Protocol):
    """One pub/sub connection to one Redis node (RESP2 push replies parsed by hiredis)."""

    def __init__(self, router: Router, addr: Addr) -> None:
        self.router = router
        self.addr = addr
        self.reader = hiredis.Reader()
        self.transport: Any = None
        self.confirm: dict[bytes, deque[asyncio.Future[None]]] = {}
        self.unsubs: dict[bytes, int] = {}
        """SUNSUBSCRIBE replies still expected per channel (any other is Redis moving a slot)."""
        self.feeds: set[Feed] = set()
        self.lost = False
        self.pinged = False
        """A PING went out and nothing has been received since (`Router._watch`)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        keepalive(transport)

    def data_received(self, data: bytes) -> None:
        # Anything received shows the connection alive: a PONG queued behind data that a busy
        # loop reads slowly is no sign of a dead one (`Router._watch`).
        self.pinged = False
        self.reader.feed(data)
        replies = []
        while (reply := self.reader.gets()) is not False:
            replies.append(reply)
        self.router._replies(self, replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for q in self.confirm.values():
            for fut in q:
                if not fut.done():
                    fut.set_exception(ConnectionError(f"pub/sub connection lost: {exc}"))
        self.confirm.clear()
        self.router._link_lost(self, exc)

    def send(self, *args: Any) -> None:
        if not self.lost and self.transport is not None:
            self.transport.write(hiredis.pack_command(args))

    def subscribe(self, command: str, channel: bytes) -> asyncio.Future[None]:
        """Send (S)SUBSCRIBE; the future is done when Redis confirmed it."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.confirm.setdefault(channel, deque()).append(fut)
        self.send(command, channel)
        return fut

    def confirmed(self, channel: bytes) -> None:
        q = self.confirm.get(channel)
        if q:
            fut = q.popleft()
            if not q:
                del self.confirm[channel]
            if not fut.done():
                fut.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection now (a silent peer: a close would wait for the buffer)."""
        if self.transport is not None:
            self.transport.abort()


class Router:
    """The channels of this gateway's rooms, and the gapless hand-over of their events to the
    delivery core."""

    def __init__(
        self,
        redis: AnyRedis,
        redis_url: str,
        keys: StreamKeys,
        hub: Hub,
        metrics: GatewayMetrics,
        upstream: Upstream,
        ping_s: float = 0.0,
    ) -> None:
        self.redis = redis
        self.ping_s = ping_s
        """Every pub/sub connection is pinged this often; one that received nothing by the
        next ping is aborted (0: never — TCP keepalive alone, which takes hours)."""
        self.keys = keys
        self.hub = hub
        self.core = hub.core
        self.metrics = metrics
        self.upstream = upstream
        self.cluster = isinstance(redis, RedisCluster)
        params = parse_url(redis_url)
        self.home: Addr = (str(params.get("host") or "127.0.0.1"), int(params.get("port") or 6379))
        self.username = params.get("username")
        self.password = params.get("password")
        self.control_channel = keys.control().encode()
        self.feeds: dict[str, Feed] = {}
        self.by_channel: dict[bytes, Feed] = {}
        self.links: dict[Addr, Link] = {}
        self.connecting: dict[Addr, asyncio.Future[Link]] = {}
        self.control_link: Link | None = None
        self.control: Callable[[list[Entry]], None] | None = None
        """Sees the control events (`user_kicked`, `tokens_revoked`): the token lifecycle."""
        self.control_resumed: Callable[[], Awaitable[None]] | None = None
        """Called once the control channel is subscribed again after a drop (what it carried
        meanwhile is lost: `controlgap` reconciles grants, kicks and revocations from state)."""
        self.received = 0
        """Room-channel messages received (the routing metric's count, also for benches)."""
        self.stopping = False
        self._control_lost = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()
        self._changed_soon = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the control channel (before any socket is accepted)."""
        await self._control()
        if self.ping_s > 0:
            self._spawn(self._watch())

    async def run(self) -> None:
        """The router's essential task: keeps the control subscription alive (the feeds heal
        themselves); ends only when stopped. After a drop it subscribes again (backoff), then
        reconciles what the drop may have carried (`control_resumed`: grants, kicks,
        revocations) — the one path back, so a resubscription is never without its re-read."""
        while not self.stopping:
            await self._control_lost.wait()
            # Cleared before the way back: a drop during it (the reconcile's reads take a while)
            # sets it again and goes round once more, instead of being cleared unseen.
            self._control_lost.clear()
            if self.stopping:
                return
            await retry(
                self._control_again,
                what="routing: control subscription",
                retry_if=always,
                initial_s=0.05,
                max_s=BACKOFF_MAX_S,
                logger=log,
            )

    def stop(self) -> None:
        self.stopping = True
        self._control_lost.set()  # `run` sees `stopping` and ends
        for link in list(self.links.values()):
            link.close()
        for task in list(self.tasks):
            task.cancel()

    # -- connections --------------------------------------------------------------------------

    def _addr(self, channel: bytes) -> Addr:
        if not self.cluster:
            return self.home
        cluster: Any = self.redis
        node = cluster.get_node_from_key(channel.decode())
        return (node.host, int(node.port))

    async def _link(self, addr: Addr) -> Link:
        link = self.links.get(addr)
        if link is not None and not link.lost:
            return link
        pending = self.connecting.get(addr)
        if pending is None:
            pending = self.connecting[addr] = asyncio.ensure_future(self._connect(addr))
            pending.add_done_callback(lambda _: self.connecting.pop(addr, None))
        return await asyncio.shield(pending)

    async def _connect(self, addr: Addr) -> Link:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            _, link = await loop.create_connection(lambda: Link(self, addr), *addr)
            if self.password is not None:
                # Before any subscription: the connection then only answers pushes.
                user = (self.username,) if self.username else ()
                fut: asyncio.Future[None] = loop.create_future()
                link.confirm[b"__auth__"] = deque([fut])
                link.send("AUTH", *user, self.password)
                await fut
        self.links[addr] = link
        return link

    async def _control(self) -> None:
        addr = self.home
        if self.cluster:  # any node: a cluster broadcasts classic PUBLISH to every node
            cluster: Any = self.redis
            await cluster.initialize()
            node = cluster.get_default_node()
            addr = (node.host, int(node.port))
        link = await self._link(addr)
        fut = link.subscribe("SUBSCRIBE", self.control_channel)
        async with asyncio.timeout(CONNECT_TIMEOUT_S * 2):
            await fut
        self.control_link = link

    def _link_lost(self, link: Link, exc: Exception | None) -> None:
        if self.links.get(link.addr) is link:
            del self.links[link.addr]
        if self.stopping:
            return
        log.warning("routing: pub/sub connection to %s:%s lost (%s)", *link.addr, exc or "closed")
        if link is self.control_link:
            self.control_link = None
            self._control_lost.set()  # `run` subscribes again
        for feed in list(link.feeds):
            self._resubscribe(feed)
        link.feeds.clear()

    async def _control_again(self) -> None:
        await self._control()
        if self.control_resumed is not None:
            async with asyncio.timeout(RESUME_TIMEOUT_S):
                await self.control_resumed()

    async def _watch(self) -> None:
        """A pub/sub connection that looks alive but is not (a peer gone silently, a NAT or
        firewall entry expired) would keep its rooms and the control channel silent until TCP
        keepalive gives up. Each `ping_s` every connection gets a PING; one that received
        nothing (no PONG, no message) since its previous PING is aborted, and its rooms and the control channel come back the usual
        way (resubscribe, fill, reconcile). A drop is so noticed within two intervals."""
        while not self.stopping:
            await asyncio.sleep(self.ping_s)
            for link in list(self.links.values()):
                if link.lost:
                    continue
                if link.pinged:
                    log.warning(
                        "routing: pub/sub connection to %s:%s did not answer a PING within "
                        "%.1fs; dropped",
                        *link.addr,
                        self.ping_s,
                    )
                    link.abort()
                else:
                    link.pinged = True
                    link.send("PING")

    # -- subscriptions ------------------------------------------------------------------------

    async def ensure(self, rooms: Iterable[str]) -> None:
        """Wait until every room that has local subscribers among `rooms` is subscribed and in
        sync: events appended after this returns reach the core (welcome and join read the
        room's seq only then)."""
        self.sync_core()
        waits = []
        for room in rooms:
            feed = self.feeds.get(room)
            if feed is not None and (feed.queue is not None or feed.last is None):
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                feed.waiters.append(fut)
                waits.append(fut)
        if waits:
            try:
                async with asyncio.timeout(ENSURE_TIMEOUT_S):
                    await asyncio.gather(*waits)
            except TimeoutError as exc:
                raise RedisConnectionError("routing: room subscriptions not in sync") from exc

    def sync_core(self) -> None:
        """Follow the core's subscriptions: a room's first subscriber subscribes its channel,
        its last one leaving unsubscribes it."""
        core = self.core
        if core.emptied:
            emptied, core.emptied = core.emptied, []
            for room in emptied:
                if room not in core.rooms:
                    self._release(room)
        if core.opened:
            opened, core.opened = core.opened, []
            for room in opened:
                if room in core.rooms and room not in self.feeds:
                    channel = self.keys.channel(room).encode()
                    feed = self.feeds[room] = self.by_channel[channel] = Feed(room, channel)
                    self._spawn_sync(feed)

    def changed(self) -> None:
        """Subscriptions ended in the core: leave the emptied rooms' channels soon (once per
        loop turn however many sockets closed)."""
        if not self._changed_soon:
            self._changed_soon = True
            asyncio.get_running_loop().call_soon(self._changed)

    def _changed(self) -> None:
        self._changed_soon = False
        self.sync_core()

    def _release(self, room: str) -> None:
        feed = self.feeds.pop(room, None)
        if feed is None:
            return
        self.by_channel.pop(feed.channel, None)
        if feed.task is not None:
            feed.task.cancel()
        self._wake(feed)
        link = feed.link
        if link is not None and not link.lost:
            link.feeds.discard(feed)
            link.unsubs[feed.channel] = link.unsubs.get(feed.channel, 0) + 1
            link.send("SUNSUBSCRIBE", feed.channel)

    def _wake(self, feed: Feed) -> None:
        for fut in feed.waiters:
            if not fut.done():
                fut.set_result(None)
        feed.waiters.clear()

    def background(self, coro: Any) -> asyncio.Task[Any]:
        """Run `coro` as one of the router's tasks (cancelled by `stop`)."""
        return self._spawn(coro)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def _spawn_sync(self, feed: Feed, floor: int | None = None) -> None:
        """Bring the feed in sync (again), from `floor` if that is below its last seq."""
        if floor is not None:
            feed.floor = floor if feed.floor is None else min(feed.floor, floor)
        if feed.queue is None:
            feed.queue = []
        if feed.task is None or feed.task.done():
            feed.task = self._spawn(self._sync(feed))
        else:
            feed.again = True

    def _resubscribe(self, feed: Feed) -> None:
        """Its connection dropped (or Redis moved its slot): subscribe again, fill the gap."""
        if feed.link is not None:
            feed.link.feeds.discard(feed)
        feed.link = None
        self._spawn_sync(feed)

    async def _sync(self, feed: Feed) -> None:
        """Subscribe (if needed), position, fill (last, current] from the recent stream, then
        release the queued live messages in order; retried with back-off while Redis or history
        do not answer. Ends with the feed in sync (queue None)."""
        backoff = Backoff(0.05, BACKOFF_MAX_S)
        tries = 0
        while not self.stopping and self.feeds.get(feed.room) is feed:
            tries += 1
            try:
                feed.again = False
                if feed.floor is not None:
                    if feed.last is not None:
                        feed.last = min(feed.last, feed.floor)
                    feed.floor = None
                if feed.link is None or feed.link.lost:
                    await self._subscribe(feed)
                await self._fill(feed, lenient=tries > MAX_STRICT_TRIES)
                if feed.again or feed.floor is not None:
                    feed.queue = feed.queue if feed.queue is not None else []
                    continue
                self._wake(feed)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not redis_unavailable(exc) and not isinstance(exc, OSError | TimeoutError):
                    log.exception("routing: sync of %r failed; retrying", feed.room)
                else:
                    log.warning("routing: sync of %r failed (%s); retrying", feed.room, exc)
                await asyncio.sleep(backoff.next_delay())

    async def _subscribe(self, feed: Feed) -> None:
        link = await self._link(self._addr(feed.channel))
        fut = link.subscribe("SSUBSCRIBE", feed.channel)
        feed.link = link
        link.feeds.add(feed)
        async with asyncio.timeout(CONNECT_TIMEOUT_S * 2):
            await fut

    async def _fill(self, feed: Feed, lenient: bool = False) -> None:
        """The subscription is confirmed: fill up to the room's current seq, then drain."""
        shard = self.keys.room_shard(feed.room)
        current = int(await self.redis.hget(self.keys.seq(shard), feed.room) or 0)
        if feed.last is None:
            # A new feed: from the lowest position among the subscribers that have one (a grant
            # at S subscribed them at S-1), else from now (welcome / join read their seq later).
            subs = self.core.rooms.get(feed.room, {})
            known = [s.pos for s in subs.values() if s.pos >= 0]
            feed.last = min(known) if known else current
        while True:
            if current > feed.last:
                await self._fetch(feed, feed.last, current, lenient)
            queue = feed.queue or []
            feed.queue = None
            gap = self._release_queue(feed, queue)
            if gap is None:
                break
            current = gap  # a hole in the queued messages: fill up to it, then drain the rest

    def _release_queue(self, feed: Feed, queue: list[tuple[int | None, Entry]]) -> int | None:
        """Deliver queued messages in order; at a hole, put the rest back and return the seq
        to fill up to."""
        out: list[Entry] = []
        for i, (seq, fields) in enumerate(queue):
            if seq is not None:
                last = feed.last or 0
                if seq <= last:
                    continue
                if seq > last + 1:
                    feed.queue = queue[i:]
                    self._deliver(out)
                    return seq - 1
                feed.last = seq
            out.append(fields)
        self._deliver(out)
        return None

    async def _fetch(self, feed: Feed, after: int, until: int, lenient: bool) -> None:
        events, first = await fetch(self.redis, self.keys, self.upstream, feed.room, after, until)
        if self.feeds.get(feed.room) is not feed:
            return
        seqs = {e["seq"]: e for e in events if isinstance(e.get("seq"), int)}
        if first is not None:
            log.warning("routing: %r events %d..%d exist nowhere", feed.room, after + 1, first - 1)
            after = first - 1
        out: list[Entry] = []
        for seq in range(after + 1, until + 1):
            ev = seqs.get(seq)
            if ev is None:
                if lenient:  # tried long enough: an event that exists nowhere must not stall
                    log.error("routing: %r seq %d cannot be read; skipped", feed.room, seq)
                    continue
                raise OSError(f"routing: {feed.room!r} seq {seq} not readable yet")
            kind = str(ev.get("kind", "")).encode()
            out.append({FIELD_ROOM: feed.room_b, FIELD_KIND: kind, FIELD_EVENT: orjson.dumps(ev)})
        feed.last = until
        if out:
            self.metrics.route_fills.add(len(out))
        self._deliver(out)

    def grant(self, room: str, users: list[str], seq: int) -> None:
        """Membership of `room` granted to `users` at `seq` (from the control channel, or found
        by the reconcile after a control-channel drop, `controlgap`): their local sockets
        receive the room from `seq` on — subscribed, and filled from `seq - 1` when the room's
        feed is already past it. Idempotent: a grant seen twice (live and by the reconcile)
        subscribes once, and the core writes each seq once."""
        self.core.grant(room, users, seq)
        if any(u in self.core.users for u in users):
            self.sync_core()
            self.reposition(room, seq - 1)

    def reposition(self, room: str, after: int) -> None:
        """A subscriber positioned at `after` appeared on a feed that is past it (a grant seen
        on the control channel after the room's channel delivered it): fill from there (the
        others skip what they have)."""
        feed = self.feeds.get(room)
        if feed is None or feed.last is None or feed.last <= after:
            return
        self._spawn_sync(feed, after)

    # -- messages -----------------------------------------------------------------------------

    def _replies(self, link: Link, replies: list[Any]) -> None:
        entries: list[Entry] = []
        received = 0
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                if str(reply).startswith("LOADING"):
                    # Redis restarted and loads its data: it serves (S)SUBSCRIBE and AUTH, and
                    # refuses only the ping, so the connection answered (no reconnect churn).
                    link.pinged = False
                    continue
                self._error(link, str(reply))
                continue
            if not isinstance(reply, list) or len(reply) < 3:
                if reply == b"OK":
                    link.confirmed(b"__auth__")
                elif reply == b"PONG" or (isinstance(reply, list) and reply[:1] == [b"pong"]):
                    link.pinged = False  # subscribed: ["pong", ""]; not yet: +PONG
                continue
            typ = reply[0]
            if typ == b"smessage":
                received += 1
                feed = self.by_channel.get(reply[1])
                if feed is None:
                    continue  # unsubscribed meanwhile
                kind, seq, body = parse_note(reply[2])
                fields = {FIELD_ROOM: feed.room_b, FIELD_KIND: kind, FIELD_EVENT: body}
                if feed.queue is not None:
                    feed.queue.append((seq, fields))
                    continue
                if seq is not None:
                    last = feed.last or 0
                    if seq <= last:
                        continue
                    if seq > last + 1:  # lost on the way: fill before going on
                        feed.queue = [(seq, fields)]
                        self._spawn_sync(feed)
                        continue
                    feed.last = seq
                entries.append(fields)
            elif typ == b"message":
                self._deliver(entries)
                entries = []
                self._control_note(reply[2])
            elif typ in (b"ssubscribe", b"subscribe"):
                link.confirmed(reply[1])
            elif typ == b"sunsubscribe":
                self._unsubscribed(link, reply[1])
        if received:
            self.received += received
            self.metrics.events_received.add(received)
        self._deliver(entries)

    def _unsubscribed(self, link: Link, channel: bytes) -> None:
        n = link.unsubs.get(channel, 0)
        if n:
            if n == 1:
                del link.unsubs[channel]
            else:
                link.unsubs[channel] = n - 1
            return
        # Not asked for: Redis moved the slot away (cluster resharding): subscribe again where
        # it lives now, and fill what passed meanwhile.
        feed = self.by_channel.get(channel)
        if feed is not None:
            log.info(
                "routing: %r unsubscribed by %s:%s (its slot moved); subscribing where it lives",
                feed.room,
                *link.addr,
            )
            self._spawn(self._refresh_then(feed))

    async def _refresh_then(self, feed: Feed) -> None:
        if self.cluster:
            with contextlib.suppress(Exception):
                await self.redis.nodes_manager.initialize()  # type: ignore[union-attr]
        self._resubscribe(feed)

    def _error(self, link: Link, message: str) -> None:
        """An error reply (MOVED for an SSUBSCRIBE after resharding, ...): the connection is
        dropped, which resubscribes its rooms where they live now."""
        log.warning("routing: redis answered %s; reconnecting", message)
        if self.cluster:
            self._spawn(self._reset(link))
        else:
            link.close()

    async def _reset(self, link: Link) -> None:
        with contextlib.suppress(Exception):
            await self.redis.nodes_manager.initialize()  # type: ignore[union-attr]
        link.close()

    def _control_note(self, note: bytes) -> None:
        """A grant, kick or revocation from the control channel."""
        try:
            kind, seq, body = parse_note(note)
            if kind in _TOKENS:
                if self.control is not None:
                    self.control([{FIELD_KIND: kind, FIELD_EVENT: body}])
                return
            if kind not in _GRANTS or seq is None:
                return
            env = orjson.loads(body)
            room = env.get("room")
            if not isinstance(room, str) or not room:
                return
            users = created_members(env) if kind == b"room_created" else [env.get("user")]
            self.grant(room, [u for u in users if isinstance(u, str) and u], seq)
        except Exception:  # one malformed note must not stop the connection's other messages
            log.exception("routing: skipped a control message")

    def _deliver(self, entries: list[Entry]) -> None:
        if entries:
            self.hub.deliver_counted(entries, self.metrics)
        self.sync_core()
