"""Client commands → log appends, Redis reads and reply frames.

`Commands.handle` takes one raw frame of an authenticated session and writes its reply (ack,
error, joined, ...) through the hub, so replies and room events keep one order per socket.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from roomstream_contracts.codec import error_frame, frame, parse_command
from roomstream_contracts.errors import ErrorCode, ProtocolError
from roomstream_contracts.events import (
    Envelope,
    EventKind,
    MemberJoinedData,
    MemberLeftData,
    MessageData,
    MessageDeletedData,
    MessageEditedData,
)
from roomstream_contracts.frames import (
    Command,
    DeleteCommand,
    EditCommand,
    HistoryCommand,
    JoinCommand,
    LeaveCommand,
    PingCommand,
    PresenceCommand,
    ReadCommand,
    SendCommand,
    TypingCommand,
)
from roomstream_contracts.ids import new_event_id, now_ms
from roomstream_kit.eventlog import (
    Access,
    AppendResult,
    AppendStatus,
    EventLog,
    OwnerCheck,
    RoomCheck,
)
from roomstream_kit.redis import AnyRedis, redis_unavailable
from roomstream_kit.redis import text as redis_text
from roomstream_kit.telemetry import inject_context, span_if_recorded, tracer

from .delivery import Done
from .hub import Hub
from .metrics import GatewayMetrics
from .publish_hook import PublishHook
from .ratelimit import TokenBucket
from .replay import fetch
from .session import Session
from .settings import GatewaySettings
from .upstream import Upstream

log = logging.getLogger(__name__)

RATE_LIMITED_TYPES = (SendCommand, EditCommand, DeleteCommand, ReadCommand)
MAX_FILLS = 3
"""Times a join fetches a missing range again before answering `unavailable`."""


class Commands:
    def __init__(
        self,
        settings: GatewaySettings,
        node: str,
        redis: AnyRedis,
        eventlog: EventLog,
        hub: Hub,
        upstream: Upstream,
        metrics: GatewayMetrics,
        close: Callable[[Session, int, str], None],
    ) -> None:
        self.settings = settings
        self.node = node
        self.redis = redis
        self.log = eventlog
        self.keys = settings.keys
        self.hub = hub
        self.upstream = upstream
        self.metrics = metrics
        self.close = close
        self.tracer = tracer("roomstream.gateway")
        self.publish_hook = PublishHook.from_settings(settings, node, eventlog)
        """Asked before a `send` is appended, when configured (`publish_hook`)."""
        self.buckets: dict[str, TokenBucket] = {}
        """user → send budget on this gateway (dropped when the user's last socket closes)."""
        self._handlers: dict[type[Any], Callable[[Session, Any], Awaitable[None]]] = {
            JoinCommand: self.join,
            LeaveCommand: self.leave,
            SendCommand: self.send,
            EditCommand: self.edit,
            DeleteCommand: self.delete,
            TypingCommand: self.typing,
            HistoryCommand: self.history,
            PresenceCommand: self.presence,
            PingCommand: self.ping,
        }

    # -- dispatch ------------------------------------------------------------------------------

    def register(self, kind: type[Any], handler: Callable[[Session, Any], Awaitable[None]]) -> None:
        """Handle commands of `kind` with `handler` (the gateway adds `auth`: token refresh)."""
        self._handlers[kind] = handler

    async def handle(self, session: Session, raw: str | bytes) -> None:
        ref: str | None = None
        try:
            cmd = parse_command(raw)
            ref = cmd.ref
            kind = type(cmd)
            self.metrics.messages_in.add(1, {"type": cmd.type})
            if isinstance(cmd, RATE_LIMITED_TYPES) and not self._allow(session, cmd):
                return
            handler = self._handlers.get(kind)
            if handler is None:  # never `ack` a frame nothing handled (e.g. a garbage `auth`)
                raise ProtocolError(ErrorCode.BAD_REQUEST, f"{cmd.type} is not accepted", ref)
            await handler(session, cmd)
        except ProtocolError as exc:
            self.fail(session, exc.code, exc.message, exc.ref or ref)
        except Exception as exc:
            if redis_unavailable(exc):  # down, or answering "try again" (e.g. LOADING)
                self.fail(session, ErrorCode.UNAVAILABLE, f"redis unavailable: {exc}", ref)
                return
            log.exception("command failed", extra={"conn": session.id, "user": session.user})
            self.fail(session, ErrorCode.INTERNAL, "internal error", ref)

    async def aclose(self) -> None:
        """Release the publish hook's HTTP client (at shutdown)."""
        if self.publish_hook is not None:
            await self.publish_hook.aclose()

    def reply(self, session: Session, payload: bytes) -> None:
        self.hub.send(session, payload)

    def fail(
        self,
        session: Session,
        code: ErrorCode,
        message: str,
        ref: str | None,
        retry_after: int | None = None,
    ) -> None:
        self.metrics.errors.add(1, {"code": code.value})
        self.reply(session, error_frame(code, message, ref, retry_after))

    def _allow(self, session: Session, cmd: Command) -> bool:
        """Spend one unit of the user's budget, or answer rate_limited (and close on abuse)."""
        now = time.monotonic()
        bucket = self.buckets.get(session.user)
        if bucket is None:
            bucket = self.buckets[session.user] = TokenBucket(
                self.settings.send_rate_per_s, self.settings.send_burst, now
            )
        wait = bucket.take(now)
        if wait == 0.0:
            session.limited = 0
            return True
        session.limited += 1
        self.metrics.rate_limited.add(1)
        if session.limited >= self.settings.rate_limit_close_after:
            self.close(session, 1008, "rate limit exceeded")
            return False
        self.fail(
            session,
            ErrorCode.RATE_LIMITED,
            "send budget spent",
            cmd.ref,
            retry_after=max(1, int(wait * 1000 + 0.999)),
        )
        return False

    # -- appends -------------------------------------------------------------------------------

    def envelope(
        self, session: Session, kind: EventKind, room: str | None, data: dict[str, Any]
    ) -> Envelope:
        return Envelope(
            id=new_event_id(),
            kind=kind,
            room=room,
            user=session.user,
            node=self.node,
            conn=session.id,
            ts=now_ms(),
            data=data,
            trace=inject_context(),
        )

    async def append(self, envelope: Envelope, **options: Any) -> AppendResult:
        start = time.perf_counter()
        result = await self.log.append(envelope, **options)
        self.metrics.redis_latency.record(time.perf_counter() - start)
        return result

    async def append_checked(
        self, envelope: Envelope, ref: str | None, **options: Any
    ) -> AppendResult:
        """Append with a membership check (`access=`); a room whose membership authority is not
        seeded yet (created before it existed) is seeded by the rooms API, then retried once."""
        result = await self.append(envelope, **options)
        if result.status == AppendStatus.UNSEEDED:
            await self._seed(envelope.room or "", ref)
            result = await self.append(envelope, **options)
        if result.status == AppendStatus.UNSEEDED:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "room membership is being set up", ref)
        if result.status == AppendStatus.NO_ROOM:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no room {envelope.room!r}", ref)
        if result.status == AppendStatus.FORBIDDEN:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"not a member of room {envelope.room!r}", ref)
        return result

    async def _seed(self, room: str, ref: str | None) -> None:
        """`GET /rooms/{room}` seeds the room's roster from the rooms projection."""
        if await self.upstream.room(room) is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no room {room!r}", ref)

    async def _member(self, session: Session, room: str, ref: str | None) -> None:
        """Reads (history, presence) need membership per the roster (the authority the append
        script keeps), never per a read model that the projection updates later."""
        exists, kind, member = await self.log.access(room, session.user)
        if exists and kind is None:
            await self._seed(room, ref)
            exists, kind, member = await self.log.access(room, session.user)
        if not exists:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no room {room!r}", ref)
        if kind is None:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "room membership is being set up", ref)
        if not member:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"not a member of room {room!r}", ref)

    # -- commands ------------------------------------------------------------------------------

    async def send(self, session: Session, cmd: SendCommand) -> None:
        if len(cmd.text) > self.settings.max_text_chars:
            raise ProtocolError(
                ErrorCode.TOO_LARGE, f"text over {self.settings.max_text_chars} characters", cmd.ref
            )
        with span_if_recorded(self.tracer, "gateway.send"):
            text = cmd.text
            if self.publish_hook is not None:  # allow, replace the text, or refuse (raises)
                text = await self.publish_hook.review(session, cmd)
            env = self.envelope(
                session,
                EventKind.MESSAGE,
                cmd.room,
                MessageData(text=text, client_id=cmd.id).model_dump(),
            )
            result = await self.append_checked(
                env, cmd.ref, room_check=RoomCheck.EXISTS, dedupe_id=cmd.id, access=Access.MEMBER
            )
        if result.status == AppendStatus.ID_IN_USE:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"id {cmd.id!r} is already used by a send to room {result.room!r} that has not "
                "succeeded; retry it there, or use a new id",
                cmd.ref,
            )
        # A repeated id answers with the original ack, also when it was another room's.
        room = result.room or cmd.room
        self.reply(
            session, frame("ack", ref=cmd.ref, room=room, seq=result.seq, id=result.event_id)
        )

    async def edit(self, session: Session, cmd: EditCommand) -> None:
        if len(cmd.text) > self.settings.max_text_chars:
            raise ProtocolError(
                ErrorCode.TOO_LARGE, f"text over {self.settings.max_text_chars} characters", cmd.ref
            )
        await self._change(
            session,
            cmd.room,
            cmd.seq,
            cmd.ref,
            EventKind.MESSAGE_EDITED,
            MessageEditedData(target_seq=cmd.seq, text=cmd.text).model_dump(),
        )

    async def delete(self, session: Session, cmd: DeleteCommand) -> None:
        await self._change(
            session,
            cmd.room,
            cmd.seq,
            cmd.ref,
            EventKind.MESSAGE_DELETED,
            MessageDeletedData(target_seq=cmd.seq).model_dump(),
        )

    async def _change(
        self,
        session: Session,
        room: str,
        target: int,
        ref: str | None,
        kind: EventKind,
        data: dict[str, Any],
    ) -> None:
        """Edit or delete: the target must be a message by this user."""
        span = "gateway.edit" if kind == EventKind.MESSAGE_EDITED else "gateway.delete"
        with span_if_recorded(self.tracer, span):
            env = self.envelope(session, kind, room, data)
            result = await self.append_checked(
                env,
                ref,
                room_check=RoomCheck.EXISTS,
                owner_check=OwnerCheck(target, session.user),
                access=Access.MEMBER,
            )
            if result.status == AppendStatus.UNKNOWN_TARGET:
                # The target left the recent buffer: check it against history, then append.
                page, _ = await self.upstream.messages(room, after=target - 1, limit=1)
                found = page[0] if page and page[0].get("seq") == target else None
                if found is None:
                    raise ProtocolError(ErrorCode.NOT_FOUND, f"no event {target} in {room!r}", ref)
                if found.get("kind") != EventKind.MESSAGE or found.get("user") != session.user:
                    raise ProtocolError(ErrorCode.FORBIDDEN, "not your message", ref)
                result = await self.append_checked(
                    env, ref, room_check=RoomCheck.EXISTS, access=Access.MEMBER
                )
        if result.status in (AppendStatus.NOT_OWNER, AppendStatus.NOT_MESSAGE):
            raise ProtocolError(ErrorCode.FORBIDDEN, "not your message", ref)
        if result.status == AppendStatus.DELETED:
            # Deleted is final: no edit (its text would go out live) and no second delete.
            raise ProtocolError(ErrorCode.NOT_FOUND, f"message {target} was deleted", ref)
        self.reply(session, frame("ack", ref=ref, room=room, seq=result.seq, id=result.event_id))

    async def typing(self, session: Session, cmd: TypingCommand) -> None:
        now = time.monotonic()
        if session.typing_at is None:
            session.typing_at = {}
        last = session.typing_at.get(cmd.room)
        if last is not None and now - last < self.settings.typing_interval_s:
            return  # silently dropped: typing is a hint
        session.typing_at[cmd.room] = now
        with span_if_recorded(self.tracer, "gateway.typing"):
            env = self.envelope(session, EventKind.TYPING, cmd.room, {})
            await self.append_checked(
                env, cmd.ref, room_check=RoomCheck.EXISTS, access=Access.MEMBER
            )

    async def ping(self, session: Session, cmd: PingCommand) -> None:
        self.reply(session, frame("pong", ref=cmd.ref))

    async def presence(self, session: Session, cmd: PresenceCommand) -> None:
        await self._member(session, cmd.room, cmd.ref)
        raw = await self.redis.hgetall(self.keys.presence(cmd.room))
        counts = sorted((redis_text(k), int(v)) for k, v in raw.items() if int(v) > 0)
        users = [{"user": user, "connections": n} for user, n in counts]
        self.reply(session, frame("presence", ref=cmd.ref, room=cmd.room, users=users))

    async def history(self, session: Session, cmd: HistoryCommand) -> None:
        await self._member(session, cmd.room, cmd.ref)
        events, more = await self.upstream.messages(cmd.room, before=cmd.before, limit=cmd.limit)
        self.reply(session, frame("history", ref=cmd.ref, room=cmd.room, events=events, more=more))

    async def leave(self, session: Session, cmd: LeaveCommand) -> None:
        seq = None
        with span_if_recorded(self.tracer, "gateway.leave"):
            data = MemberLeftData(by=session.user).model_dump()
            env = self.envelope(session, EventKind.MEMBER_LEFT, cmd.room, data)
            try:
                # Appended only if the roster has the user (`not_member`: nothing to leave).
                result = await self.append_checked(
                    env, cmd.ref, room_check=RoomCheck.EXISTS, access=Access.LEAVE
                )
                seq = result.seq
            except ProtocolError as exc:
                if exc.code != ErrorCode.NOT_FOUND:
                    raise
        self.hub.unsubscribe(session, cmd.room, seq or 0)
        self.reply(session, frame("ack", ref=cmd.ref, room=cmd.room, seq=seq))

    async def join(self, session: Session, cmd: JoinCommand) -> None:
        room, ref = cmd.room, cmd.ref
        # Refuse the plain cases before holding anything (a read of the roster, the authority);
        # the append below decides again, atomically, should the roster change meanwhile.
        exists, kind, member = await self.log.access(room, session.user)
        if not exists:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no room {room!r}", ref)
        if kind == "private" and not member:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"room {room!r} is private", ref)
        core, peer = self.hub.core, session.peer
        assert peer is not None
        # Subscribed and held before the seq is read: nothing falls between; the core merges
        # the replay with the held live frames, each seq once (`delivery`).
        core.begin_join(peer, room, cmd.since)
        try:
            await self.hub.ensure((room,))  # the room's events reach this gateway from here on
            # The roster decides, atomically with the append: a member joins without an event
            # (`member`), a non-member of a public room gets `member_joined`, a non-member of a
            # private room is refused (membership is granted through the rooms API only).
            with span_if_recorded(self.tracer, "gateway.join"):
                env = self.envelope(
                    session,
                    EventKind.MEMBER_JOINED,
                    room,
                    MemberJoinedData(by=session.user).model_dump(),
                )
                result = await self.append_checked(
                    env, ref, room_check=RoomCheck.EXISTS, access=Access.JOIN
                )
            if result.status == AppendStatus.OK and result.seq is not None:
                core.granted(peer, result.seq)
            (seq_raw,) = await self.log.batch(
                [("HGET", self.keys.seq(self.keys.room_shard(room)), room)]
            )
            current = int(seq_raw or 0)
            rng = core.replay_range(peer, current)
            events: list[dict[str, Any]] = []
            first: int | None = None
            if rng is not None:
                events, first = await fetch(self.redis, self.keys, self.upstream, room, *rng)
            for _ in range(MAX_FILLS):
                outcome = core.finish_join(peer, ref, events, first)
                if isinstance(outcome, Done):
                    break
                # A hole (history catching up with a trimmed recent buffer, or the replay not
                # reaching the held live frames): fetch that range, merge again.
                events, _ = await fetch(
                    self.redis, self.keys, self.upstream, room, outcome.after, outcome.until
                )
                if not events:
                    break
            else:
                outcome = None
            if not isinstance(outcome, Done):
                raise ProtocolError(
                    ErrorCode.UNAVAILABLE, f"history of {room!r} is catching up; retry", ref
                )
        except BaseException:
            # The socket keeps what it received (and the live frames held meanwhile): a retry
            # converges.
            self.hub.write(session, core.abort_join(peer))
            raise
        self.hub.write(session, outcome.frames)
