"""The async roomstream client: one logical session over a WebSocket that survives reconnects.

I/O only; the pure parts live in `sequencer` (exactly-once, in-order per room) and `backoff`.

A `Client` keeps one connection open to one of its URLs. When the connection is lost (or closed
with 1011 / 1012 / 1013), it reconnects with exponential backoff and jitter, moving on to the next
URL each time (so it lands on another gateway), resumes every room it knows with
`join(room, since=last_seq)`, and re-sends every `send` that was not acknowledged yet with the same
client message id (the gateway acknowledges a repeated id without a second event). Close codes
4401, 4408, 1008 and 1009 are final: every waiting call and `events()` raise
`ConnectionClosedFatal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import orjson
from pydantic import ValidationError
from roomstream_contracts.frames import (
    COMMAND_TYPES,
    AckFrame,
    EventFrame,
    HistoryFrame,
    JoinedFrame,
    PongFrame,
    PresenceFrame,
    TypingFrame,
    UserFrame,
    WelcomeFrame,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .backoff import Backoff
from .errors import (
    FATAL_CLOSE_CODES,
    ClientClosed,
    ClientError,
    CommandError,
    ConnectionClosedFatal,
    ConnectionLost,
)
from .sequencer import Sequencer

log = logging.getLogger(__name__)

_EVENT_FIELDS = frozenset(EventFrame.model_fields)
_EVENT_REQUIRED = frozenset(n for n, f in EventFrame.model_fields.items() if f.is_required())
_EVENT_DEFAULTS = [
    (n, None if f.is_required() else f.get_default(call_default_factory=True))
    for n, f in EventFrame.model_fields.items()
]
_set = object.__setattr__


def _event_frame(msg: dict[str, Any]) -> EventFrame:
    """`EventFrame.model_construct(**msg)` (trusted server frame, no validation) at a third of
    its cost: the hot path of every client (~14 µs → ~4 µs per event frame)."""
    keys = msg.keys()
    if not (keys <= _EVENT_FIELDS and keys >= _EVENT_REQUIRED):
        return EventFrame.model_construct(**msg)  # extra or missing fields: pydantic's way
    event = EventFrame.__new__(EventFrame)
    get = msg.get
    values = {n: get(n, default) for n, default in _EVENT_DEFAULTS}  # in field order
    _set(event, "__dict__", values)
    _set(event, "__pydantic_fields_set__", set(keys))
    _set(event, "__pydantic_extra__", {})
    _set(event, "__pydantic_private__", None)
    return event


Welcome = WelcomeFrame
Joined = JoinedFrame
Ack = AckFrame
UserEvent = UserFrame
"""What `user_events()` yields: events of the user's own stream."""
Event: TypeAlias = EventFrame | TypingFrame
"""What `events()` yields: room events (with or without seq) and typing notices."""

USER_STREAM = "~"
"""The user stream's key in `user_sequencer` (no room id starts with `~`)."""

TokenSource: TypeAlias = str | Callable[[], str]
"""A token, or a function returning a fresh one at every (re)connect."""

_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    InvalidHandshake,
    TimeoutError,
    ConnectionClosed,
)


@dataclass(slots=True)
class _Request:
    """A command waiting for its reply (`ack`, `error`, `joined`, `history`, …)."""

    frame: dict[str, Any]
    future: asyncio.Future[dict[str, Any]]
    retry: bool
    """Re-send after a reconnect (safe: idempotent or read-only) instead of failing."""
    sent_on: int = -1
    """The connection generation it was last sent on."""


@dataclass(slots=True)
class Stats:
    """Counters for tests, the bench tool and curious users."""

    connects: int = 0
    reconnects: int = 0
    events: int = 0
    resent: int = 0
    urls: list[str] = field(default_factory=list)
    """The URL of every successful connection, in order."""
    closes: list[int | None] = field(default_factory=list)
    """The close code of every lost connection (None: dropped without a close frame)."""


class Client:
    """An async roomstream session. Use `async with Client(urls, token) as c:` or `connect()`.

    `urls`: one gateway URL (`ws://host:8000/ws`) or several; `token`: a JWT (or a callable giving
    one). `first_frame_auth` sends the token in an `auth` frame instead of the Authorization
    header (what browsers do). `on_event`, when given, receives each event instead of the
    `events()` queue (the bench tool uses it to avoid a queue hop).
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        token: TokenSource,
        *,
        first_frame_auth: bool = False,
        backoff: Backoff | None = None,
        connect_timeout: float = 30.0,
        request_timeout: float = 30.0,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        gap_timeout: float = 5.0,
        on_event: Callable[[Event], None] | None = None,
        on_user_event: Callable[[UserFrame], None] | None = None,
    ) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        if not self.urls:
            raise ValueError("at least one gateway URL is needed")
        self._token = token
        self.first_frame_auth = first_frame_auth
        self.backoff = backoff or Backoff()
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.gap_timeout = gap_timeout
        self.on_event = on_event
        self.on_user_event = on_user_event

        self.welcome: WelcomeFrame | None = None
        """The `welcome` of the current (or last) connection."""
        self.url: str | None = None
        """The URL of the current (or last) connection."""
        self.stats = Stats()
        self.sequencer: Sequencer[Event] = Sequencer()
        self.user_sequencer: Sequencer[UserFrame] = Sequencer()
        """The user's own stream (`user` frames), resumed on reconnect with `user_since`."""
        self._user_queue: asyncio.Queue[UserFrame | None] = asyncio.Queue()

        self._url_index = 0
        self._ws: ClientConnection | None = None
        self._generation = 0
        self._connected = asyncio.Event()
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._requests: dict[str, _Request] = {}
        self._refs = itertools.count(1)
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._fatal: BaseException | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> WelcomeFrame:
        """Open the first connection (trying every URL with backoff up to `connect_timeout`).

        Raises `ConnectionClosedFatal` when the gateway rejects the token, `TimeoutError` when no
        gateway answered in time.
        """
        if self._runner is not None:
            raise RuntimeError("already connected")
        ws, welcome = await self._open_with_retry(time.monotonic() + self.connect_timeout)
        self._attach(ws, welcome)
        self._runner = asyncio.create_task(self._run(ws), name="roomstream-client")
        self._spawn(self._watch_gaps())
        return welcome

    async def close(self) -> None:
        """Close the connection and stop; waiting calls raise `ClientClosed`."""
        if self._closed:
            return
        self._closed = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        for task in list(self._tasks):
            task.cancel()
        self._fail_all(ClientClosed("client closed"))
        self._queue.put_nowait(None)
        self._user_queue.put_nowait(None)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def fatal(self) -> BaseException | None:
        """The error that ended the session (a fatal close code), if any."""
        return self._fatal

    async def wait_connected(self) -> None:
        """Wait until a connection is open (after a reconnect)."""
        await self._connected.wait()

    def last_seq(self, room: str) -> int | None:
        """The last seq of `room` delivered by `events()`."""
        return self.sequencer.last(room)

    @property
    def last_user_seq(self) -> int | None:
        """The last seq of the user's own stream delivered by `user_events()`."""
        return self.user_sequencer.last(USER_STREAM)

    # -- commands ---------------------------------------------------------------------------------

    async def join(self, room: str, since: int | None = None) -> JoinedFrame:
        """Join (and subscribe to) `room`. Without `since` a known room resumes where it was and a
        new one starts now; with `since` the events after it are replayed into `events()`."""
        if since is not None:
            self._deliver(self.sequencer.reset(room, since))
        elif self.sequencer.is_tracked(room):
            since = self.sequencer.last(room)
        reply = await self._request(command("join", room=room, since=since), retry=True)
        return JoinedFrame.model_validate(reply)

    async def leave(self, room: str) -> AckFrame:
        reply = await self._request(command("leave", room=room), retry=True)
        self.sequencer.forget(room)
        return AckFrame.model_validate(reply)

    async def send(self, room: str, text: str, id: str | None = None) -> AckFrame:
        """Send a message; returns its `ack` (with the room's `seq`).

        `id` is the client message id (generated when not given). The send survives reconnects:
        it is re-sent with the same id until acknowledged, so it is appended exactly once.
        """
        frame = command("send", room=room, text=text, id=id or uuid.uuid4().hex)
        return AckFrame.model_validate(await self._request(frame, retry=True))

    async def edit(self, room: str, seq: int, text: str) -> AckFrame:
        reply = await self._request(command("edit", room=room, seq=seq, text=text))
        return AckFrame.model_validate(reply)

    async def delete(self, room: str, seq: int) -> AckFrame:
        reply = await self._request(command("delete", room=room, seq=seq))
        return AckFrame.model_validate(reply)

    async def typing(self, room: str) -> None:
        """Tell the room this user is typing (fire and forget)."""
        await self._send_frame(command("typing", room=room))

    async def history(
        self, room: str, before: int | None = None, limit: int | None = None
    ) -> HistoryFrame:
        frame = command("history", room=room, before=before, limit=limit)
        return HistoryFrame.model_validate(await self._request(frame, retry=True))

    async def presence(self, room: str) -> PresenceFrame:
        reply = await self._request(command("presence", room=room), retry=True)
        return PresenceFrame.model_validate(reply)

    async def read(self, room: str, seq: int) -> AckFrame:
        """Set the user's read marker of `room` to `seq` (max wins; the `ack` carries the marker
        now in force). The user's other sockets get a `user` frame of kind `read`."""
        return AckFrame.model_validate(
            await self._request(command("read", room=room, seq=seq), retry=True)
        )

    async def ping(self) -> PongFrame:
        return PongFrame.model_validate(await self._request(command("ping"), retry=True))

    # -- events -----------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[Event]:
        """Every room event exactly once and in seq order per room, plus live-only frames.

        Ends when the client is closed; raises `ConnectionClosedFatal` after a fatal close.
        """
        while True:
            item = await self._queue.get()
            if item is None:
                self._queue.put_nowait(None)  # let another iterator end too
                if self._fatal is not None:
                    raise self._fatal
                return
            yield item

    async def user_events(self) -> AsyncIterator[UserFrame]:
        """Every event of the user's own stream (per-user events, read markers of the user's
        other sockets) exactly once and in seq order, across reconnects.

        Ends when the client is closed; raises `ConnectionClosedFatal` after a fatal close.
        """
        while True:
            item = await self._user_queue.get()
            if item is None:
                self._user_queue.put_nowait(None)
                if self._fatal is not None:
                    raise self._fatal
                return
            yield item

    # -- internals: requests ------------------------------------------------------------------------

    async def _request(self, frame: dict[str, Any], *, retry: bool = False) -> dict[str, Any]:
        if self._closed:
            raise self._fatal or ClientClosed("client closed")
        ref = f"r{next(self._refs)}"
        frame = {**frame, "ref": ref}
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        request = _Request(frame, future, retry)
        self._requests[ref] = request
        try:
            await self._transmit(request)
            reply = await asyncio.wait_for(future, self.request_timeout)
        finally:
            self._requests.pop(ref, None)
        if reply.get("type") == "error":
            raise CommandError(
                str(reply.get("code")),
                str(reply.get("message", "")),
                ref,
                reply.get("retry_after"),
            )
        return reply

    async def _transmit(self, request: _Request) -> None:
        """Send `request` on the current connection, waiting for one if there is none now.

        A connection lost while sending is fine: the reconnect re-sends (or fails) the request.
        """
        deadline = time.monotonic() + self.request_timeout
        while not self._closed and not request.future.done():
            ws = self._ws
            if ws is None or not self._connected.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no connection to a gateway")
                await asyncio.wait_for(self._connected.wait(), remaining)
                continue
            generation = self._generation
            if request.sent_on == generation:
                return
            request.sent_on = generation
            with contextlib.suppress(ConnectionClosed):
                await ws.send(orjson.dumps(request.frame), text=True)
            return

    async def _send_frame(self, frame: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or not self._connected.is_set():
            await asyncio.wait_for(self._connected.wait(), self.request_timeout)
            ws = self._ws
        assert ws is not None
        with contextlib.suppress(ConnectionClosed):
            await ws.send(orjson.dumps(frame), text=True)

    def _fail_all(self, exc: BaseException) -> None:
        for request in list(self._requests.values()):
            if not request.future.done():
                request.future.set_exception(exc)
                request.future.exception()  # mark retrieved: the caller may have gone

    # -- internals: connection ----------------------------------------------------------------------

    def _next_url(self) -> str:
        url = self.urls[self._url_index % len(self.urls)]
        self._url_index += 1
        return url

    async def _open_with_retry(self, deadline: float) -> tuple[ClientConnection, WelcomeFrame]:
        last_error: BaseException | None = None
        while not self._closed:
            url = self._next_url()
            try:
                ws, welcome = await self._open(url)
            except ConnectionClosedFatal:
                raise
            except _CONNECT_ERRORS as exc:
                last_error = exc
                log.debug("connect to %s failed: %s", url, exc)
            else:
                self.backoff.reset()
                self.url = url
                return ws, welcome
            delay = self.backoff.next_delay()
            if time.monotonic() + delay > deadline:
                raise TimeoutError(f"no gateway answered: {last_error}") from last_error
            await asyncio.sleep(delay)
        raise ClientClosed("client closed")

    async def _open(self, url: str) -> tuple[ClientConnection, WelcomeFrame]:
        """One connection attempt: handshake, authentication, `welcome`."""
        token = self._token() if callable(self._token) else self._token
        headers = None if self.first_frame_auth else {"Authorization": f"Bearer {token}"}
        since = self.user_sequencer.last(USER_STREAM)
        ws = await connect(
            url if since is None else with_query(url, user_since=str(since)),
            additional_headers=headers,
            compression=None,
            open_timeout=self.open_timeout,
            ping_interval=self.ping_interval,
            max_size=None,
            user_agent_header="roomstream-client",
        )
        try:
            if self.first_frame_auth:
                await ws.send(orjson.dumps(command("auth", token=token)), text=True)
            raw = await asyncio.wait_for(ws.recv(decode=False), self.open_timeout)
            welcome = WelcomeFrame.model_validate_json(raw)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            if code in FATAL_CLOSE_CODES:
                assert code is not None and exc.rcvd is not None
                raise ConnectionClosedFatal(code, exc.rcvd.reason) from None
            raise
        except (ValidationError, ValueError, TimeoutError) as exc:
            await ws.close()
            raise InvalidHandshake(f"no welcome from {url}: {exc}") from None
        return ws, welcome

    async def _run(self, ws: ClientConnection) -> None:
        """Serve connections until closed or a fatal close code."""
        try:
            while True:
                code, reason = await self._read(ws)
                self.stats.closes.append(code)
                self._connected.clear()
                self._ws = None
                if self._closed:
                    return
                if code in FATAL_CLOSE_CODES:
                    assert code is not None
                    raise ConnectionClosedFatal(code, reason)
                log.info("connection to %s lost (%s %s); reconnecting", self.url, code, reason)
                self._fail_unsafe()
                await asyncio.sleep(self.backoff.next_delay())
                ws, welcome = await self._open_with_retry(deadline=float("inf"))
                self.stats.reconnects += 1
                self._attach(ws, welcome)
        except ConnectionClosedFatal as exc:
            self._fatal = exc
            self._closed = True
            self._fail_all(exc)
            self._queue.put_nowait(None)
            self._user_queue.put_nowait(None)
        except asyncio.CancelledError:
            raise
        except (ClientClosed, InvalidURI):
            return

    def _attach(self, ws: ClientConnection, welcome: WelcomeFrame) -> None:
        """Make `ws` the current connection; resume rooms and re-send pending commands."""
        self._ws = ws
        self._generation += 1
        self.welcome = welcome
        self.stats.connects += 1
        self.stats.urls.append(self.url or "")
        self._resume_user_stream(welcome)
        resuming = self.sequencer.positions()
        joining = {
            r.frame["room"] for r in self._requests.values() if r.frame.get("type") == "join"
        }
        # Rooms the user is a member of and the client did not follow yet start now.
        for room, room_position in welcome.rooms.items():
            if room not in resuming and room not in joining:
                self._deliver(self.sequencer.track(room, room_position.seq))
        self._connected.set()
        # Catch up with every known room: the replay fills the gap since the lost connection.
        for room, last in resuming.items():
            if room not in joining:
                self._spawn(self._resume(room, last))
        for request in list(self._requests.values()):
            if request.sent_on != -1 and request.retry:
                if request.frame.get("type") == "join":
                    position = self.sequencer.last(request.frame["room"])
                    if position is not None:
                        request.frame["since"] = position
                self.stats.resent += 1
                self._spawn(self._transmit(request))

    def _resume_user_stream(self, welcome: WelcomeFrame) -> None:
        """Where the user's stream stands: a new session starts there; a resumed one skips
        what no longer exists (the missed events follow the welcome)."""
        position = welcome.user_stream
        if position is None:
            return
        if position.recovered is False and position.first_available is not None:
            self._deliver_user(self.user_sequencer.skip_to(USER_STREAM, position.first_available))
        self._deliver_user(self.user_sequencer.track(USER_STREAM, position.seq))

    def _fail_unsafe(self) -> None:
        """Fail in-flight commands that must not be repeated blindly (edit, delete)."""
        for request in list(self._requests.values()):
            if not request.retry and request.sent_on != -1 and not request.future.done():
                request.future.set_exception(
                    ConnectionLost(f"connection lost before the reply to {request.frame['type']}")
                )

    async def _resume(self, room: str, since: int) -> None:
        try:
            await self.join(room, since=None if self.sequencer.is_tracked(room) else since)
        except CommandError as exc:
            # The room is gone or no longer ours: stop following it.
            log.warning("could not resume %s: %s", room, exc)
            if exc.code in ("not_found", "forbidden"):
                self.sequencer.forget(room)
        except (ClientClosed, ConnectionClosedFatal, TimeoutError):
            pass

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self, ws: ClientConnection) -> tuple[int | None, str]:
        """Dispatch frames until the connection closes; returns the close code and reason."""
        try:
            while True:
                raw = await ws.recv(decode=False)
                try:
                    self._dispatch(orjson.loads(raw))
                except (ValueError, ValidationError, KeyError, TypeError) as exc:
                    log.warning("ignoring a malformed frame: %s", exc)
        except ConnectionClosed as exc:
            if exc.rcvd is not None:
                return exc.rcvd.code, exc.rcvd.reason
            return None, "connection lost"

    async def _watch_gaps(self) -> None:
        """Once a second, while connected: replay rooms whose gap stays open too long."""
        while not self._closed:
            await asyncio.sleep(min(1.0, self.gap_timeout / 2))
            if self._connected.is_set():
                self._check_gaps(time.monotonic())

    def _check_gaps(self, now: float) -> None:
        """A gap open for too long (a lost live event): ask for a replay of the room."""
        pending = {r.frame["room"] for r in self._requests.values() if r.frame["type"] == "join"}
        for room in self.sequencer.stalled(now, self.gap_timeout):
            if room not in pending:
                last = self.sequencer.last(room)
                if last is not None:
                    self._spawn(self._resume(room, last))

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "event":
            # Trusted server frames on the hot path: construct without re-validating every field.
            event = _event_frame(msg)
            self.stats.events += 1
            if event.seq is None:
                self._deliver([event])
            else:
                self._deliver(self.sequencer.offer(event.room, event.seq, event, time.monotonic()))
            return
        if kind == "typing":
            self._deliver([TypingFrame.model_validate(msg)])
            return
        if kind == "user":  # the user's own stream (extension)
            user = UserFrame.model_validate(msg)
            self._deliver_user(self.user_sequencer.offer(USER_STREAM, user.seq, user))
            return
        if kind == "refresh":  # the token expires soon (extension): a callable gives a new one
            if callable(self._token):
                self._spawn(self._refresh_token())
            return
        if kind == "joined":
            joined = JoinedFrame.model_validate(msg)
            if not joined.recovered and joined.first_available is not None:
                self._deliver(self.sequencer.skip_to(joined.room, joined.first_available))
            self._deliver(self.sequencer.track(joined.room, joined.seq))
        ref = msg.get("ref")
        if isinstance(ref, str):
            request = self._requests.get(ref)
            if request is not None and not request.future.done():
                request.future.set_result(msg)
        elif kind == "error":
            log.warning("gateway error: %s %s", msg.get("code"), msg.get("message"))

    async def _refresh_token(self) -> None:
        """Send the connection a fresh token (`auth` frame) before its token's `exp`, so the
        gateway does not close it with 4401."""
        assert callable(self._token)
        try:
            await self._request(command("auth", token=self._token()))
        except (ClientError, TimeoutError) as exc:
            log.warning("token refresh failed: %s", exc)

    def _deliver_user(self, events: list[UserFrame]) -> None:
        for event in events:
            if self.on_user_event is not None:
                self.on_user_event(event)
            else:
                self._user_queue.put_nowait(event)

    def _deliver(self, events: list[Event]) -> None:
        if not events:
            return
        if self.on_event is not None:
            for event in events:
                self.on_event(event)
        else:
            for event in events:
                self._queue.put_nowait(event)


def with_query(url: str, **params: str) -> str:
    """`url` with `params` set in its query (replacing earlier values of the same names)."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k not in params]
    query.extend(params.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def command(type_: str, **fields: Any) -> dict[str, Any]:
    """A client frame with the field names of its contracts model (`roomstream_contracts.frames`),
    leaving out fields that are None. Not validated here: the gateway validates, and answers
    `bad_request` with the reason."""
    model = COMMAND_TYPES[type_]
    unknown = set(fields) - set(model.model_fields)
    if unknown:
        raise TypeError(f"{type_} has no field {sorted(unknown)}")
    return {"type": type_, **{k: v for k, v in fields.items() if v is not None}}
