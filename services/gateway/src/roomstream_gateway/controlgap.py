"""What the control channel carried while its subscription was down, reconciled from state.

Grants (`member_joined`, `room_created`) and kicks (`user_kicked`) reach a routed gateway only
on the control channel (classic pub/sub: what it carries while the connection is down is gone).
The room channels heal by seq (`routing`), and a `member_left` travels on its room's channel, so
removals heal with them; grants and kicks need this reconcile, run by the router each time the
control channel is subscribed again (`Router.control_resumed`), for every user with a local
socket, from state that outlives the gap rather than from the lost messages:

1. per batch of users, one pipeline: the revocation cutoff and the kick counter
   (`TokenLifecycle.recheck_user`: a `tokens_revoked` or `user_kicked` swallowed by the gap
   still closes the sockets it concerns) and the user's rooms read model;
2. the rooms of the read model (and the grants the core remembers) that some welcomed socket of
   the user does not receive are candidates (the read model lags the log: a second pass follows
   `AGAIN_S` later); per batch, one pipeline reads each candidate's
   roster (the membership authority: a room the user is no member of any more is skipped) and
   the newest page of the room's recent stream, where the user's latest grant is looked for
   (older pages, page by page, while it is not found; bounded: `BATCH_CANDIDATES` rooms of
   `PAGE` events per round trip, `MAX_PAGES` pages);
3. the grant found at seq S is applied as if it had arrived live (`Router.grant`): the sockets
   receive the room from S on, filled from the recent stream — each seq once, in order.

State, not a time window: the reconcile does not need to know when the link died, so a drop
detected late (the link looked alive) loses nothing either, it only heals later — the router's
ping of its pub/sub connections bounds that (`Router.ping_s`). Races with live messages are
settled by seq: a live grant and the reconcile's for the same room subscribe once; a leave
(or `member_left`) after the roster was read has a higher seq than the grant and ends the
subscription when the fill reaches it; a socket that connects meanwhile reads the current kick
counter itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import orjson
from roomstream_contracts.events import EventKind
from roomstream_contracts.streams import StreamKeys
from roomstream_contracts.userstream import is_user_stream
from roomstream_kit import redis as kit_redis
from roomstream_kit.redis import AnyRedis

from .delivery import Core, created_members
from .routing import RESUME_TIMEOUT_S, Router
from .tokens import TokenLifecycle

log = logging.getLogger(__name__)

BATCH_USERS = 500
"""Users per pipeline of the reconcile (one round trip each, plus one for their candidates)."""
PAGE = 50
"""Recent-stream entries read per candidate room and round trip, newest first (a grant of a
short gap is among the newest)."""
BATCH_CANDIDATES = 200
"""Candidate rooms per pipeline (a reply holds up to this many pages of events)."""
AGAIN_S = 2.0
"""The reconcile runs a second time this long after the first: the rooms read model lags the
log (the rooms projection applies a grant milliseconds after its append, normally), so a grant
made just before the heal may not be in it at the first pass yet."""
MAX_PAGES = 21
"""Pages looked through per candidate before giving up (21 x 50: past the default recent
buffer of 1,000 events, so a grant still in the buffer is always found)."""

_JOINED = EventKind.MEMBER_JOINED.value
_CREATED = EventKind.ROOM_CREATED.value
_LEFT = EventKind.MEMBER_LEFT.value
_MARKS = (_JOINED.encode(), _CREATED.encode(), _LEFT.encode())


def missing_rooms(core: Core, user: str, listed: Iterable[Any]) -> list[str]:
    """Rooms of `user` (the read model's `listed`, and the grants the core remembers) that a
    welcomed local socket of the user does not receive: the grants a control gap may have
    swallowed. A socket whose welcome is pending is left to its welcome."""
    peers = [p for p in core.users.get(user, ()) if not p.welcoming]
    if not peers:
        return []
    rooms = {kit_redis.text(m) for m in listed} | set(core.recent_rooms(user))
    return sorted(r for r in rooms if not is_user_stream(r) and any(r not in p.subs for p in peers))


def grant_seq(user: str, entries: list[Any]) -> tuple[int | None, int | None]:
    """In a page of a recent stream (XREVRANGE: newest first): the seq of `user`'s newest grant
    and None; or None and the lowest seq of the page (where the next page ends: look further).
    (None, None): nothing to grant — the user's newest membership event is its `member_left`
    (an unseeded room's read model may still list it; a grant before it is over), or the page
    is empty."""
    lowest: int | None = None
    for entry_id, fields in entries:
        seq = int(kit_redis.text(entry_id).partition("-")[0])
        lowest = seq
        body = fields.get(b"e") if isinstance(fields, dict) else None
        if not body or not any(mark in body for mark in _MARKS):
            continue
        env = orjson.loads(body)
        kind = env.get("kind")
        if (kind == _JOINED and env.get("user") == user) or (
            kind == _CREATED and user in created_members(env)
        ):
            return seq, None
        if kind == _LEFT and env.get("user") == user:
            return None, None
    return None, lowest


class ControlGap:
    """The reconcile after a control-channel drop (module docstring)."""

    def __init__(
        self, redis: AnyRedis, keys: StreamKeys, router: Router, tokens: TokenLifecycle
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.router = router
        self.core = router.core
        self.tokens = tokens
        self._again: asyncio.Task[None] | None = None

    async def reconcile(self) -> None:
        """The first pass now (the router waits for it), a second one `AGAIN_S` later in the
        background (for a read model that lagged the first; a newer reconcile replaces it), so
        that the router is free meanwhile to notice the next drop."""
        if self._again is not None:
            self._again.cancel()
            self._again = None
        await self.reconcile_once()
        self._again = self.router.background(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(AGAIN_S)
        try:
            async with asyncio.timeout(RESUME_TIMEOUT_S):
                await self.reconcile_once()
        except Exception as exc:  # the next drop reconciles again; nothing else to do here
            log.warning("controlgap: the second pass failed (%s)", exc)

    async def reconcile_once(self) -> None:
        users = list(dict.fromkeys([*self.tokens.by_user, *self.core.users]))
        for i in range(0, len(users), BATCH_USERS):
            await self._batch(users[i : i + BATCH_USERS])

    async def _batch(self, users: list[str]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.get(self.keys.revoked(user))
                pipe.get(self.keys.kicked(user))
                pipe.smembers(self.keys.user_rooms(user))
            replies = await pipe.execute()
        wanted: list[tuple[str, str]] = []
        for i, user in enumerate(users):
            revoked, kicked, listed = replies[3 * i : 3 * i + 3]
            self.tokens.recheck_user(user, revoked, kicked)
            wanted.extend((user, room) for room in missing_rooms(self.core, user, listed))
        for i in range(0, len(wanted), BATCH_CANDIDATES):
            await self._grants(wanted[i : i + BATCH_CANDIDATES])

    async def _grants(self, wanted: list[tuple[str, str]]) -> None:
        """Find each candidate's grant (roster first, then its recent stream) and apply it."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for user, room in wanted:
                pipe.hexists(self.keys.kinds(self.keys.room_shard(room)), room)
                pipe.sismember(self.keys.roster(room), user)
                pipe.xrevrange(self.keys.recent(room), "+", "-", count=PAGE)
            replies = await pipe.execute()
        # (user, room) → where the next page ends (exclusive), while not found
        searching: dict[tuple[str, str], int] = {}
        for i, (user, room) in enumerate(wanted):
            seeded, member, page = replies[3 * i : 3 * i + 3]
            if seeded and not member:
                continue  # not a member (any more): nothing to grant
            self._found(user, room, page, searching)
        pages = 1
        while searching and pages < MAX_PAGES:
            pages += 1
            items = list(searching.items())
            searching = {}
            async with self.redis.pipeline(transaction=False) as pipe:
                for (_, room), below in items:
                    pipe.xrevrange(self.keys.recent(room), f"{below - 1}-0", "-", count=PAGE)
                more = await pipe.execute()
            for ((user, room), _), page in zip(items, more, strict=True):
                self._found(user, room, page, searching)
        for user, room in searching:
            log.warning("controlgap: %r of %r: no grant in the recent stream", room, user)

    def _found(
        self, user: str, room: str, page: list[Any], searching: dict[tuple[str, str], int]
    ) -> None:
        seq, lowest = grant_seq(user, page)
        if seq is not None:
            log.info("controlgap: %r granted to %r at seq %d during the gap", room, user, seq)
            self.router.grant(room, [user], seq)
        elif lowest is not None and lowest > 1 and len(page) >= PAGE:
            searching[(user, room)] = lowest
