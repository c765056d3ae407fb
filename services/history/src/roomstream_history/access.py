"""Who may read a room's history: the room must exist; private rooms are for members only.

Membership comes from the append script's roster (the membership authority, docs/architecture.md);
for a room created before rosters existed, from the rooms service's Redis read model; when that is
missing, from the rooms API; when that is unreachable, from the membership events history itself
stored.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from roomstream_contracts.errors import ErrorCode, ProtocolError
from roomstream_contracts.streams import StreamKeys
from roomstream_contracts.tokens import TokenClaims
from roomstream_kit.eventlog import room_access
from roomstream_kit.redis import AnyRedis

from .model import members_from_events
from .store import HistoryStore

log = logging.getLogger(__name__)


class Access:
    def __init__(
        self,
        redis: AnyRedis,
        keys: StreamKeys,
        store: HistoryStore,
        http: httpx.AsyncClient,
        rooms_url: str,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.store = store
        self.http = http
        self.rooms_url = rooms_url.rstrip("/")

    async def room_exists(self, room: str) -> bool:
        shard = self.keys.room_shard(room)
        if await self.redis.hexists(self.keys.seq(shard), room):
            return True
        return await self.store.room_created(room)

    async def check(self, room: str, claims: TokenClaims) -> None:
        """Raise `not_found` for an unknown room, `forbidden` for a non-member of a private room."""
        if not await self.room_exists(room):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no room {room!r}")
        if claims.is_service:
            return
        if not await self.is_allowed(room, claims.sub):
            raise ProtocolError(ErrorCode.FORBIDDEN, "members only: this room is private")

    async def is_allowed(self, room: str, user: str) -> bool:
        _, seeded, member = await room_access(self.redis, self.keys, room, user)
        if seeded is not None:  # the authority, never a read model updated later
            return seeded != "private" or member
        kind: Any = await self.redis.hget(self.keys.room(room), "kind")
        if kind is not None:
            if kind not in (b"private", "private"):
                return True
            return bool(await self.redis.sismember(self.keys.members(room), user))
        answer = await self._from_rooms_api(room, user)
        if answer is not None:
            return answer
        kind_s, members = members_from_events(await self.store.membership_events(room))
        return kind_s != "private" or user in members

    async def _from_rooms_api(self, room: str, user: str) -> bool | None:
        """Ask the rooms service; None when it cannot answer."""
        try:
            r = await self.http.get(f"{self.rooms_url}/rooms/{room}")
            if r.status_code != 200:
                return None
            if r.json().get("kind") != "private":
                return True
            r = await self.http.get(f"{self.rooms_url}/rooms/{room}/members")
            if r.status_code != 200:
                return None
            return user in (r.json().get("members") or [])
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("rooms API unavailable for %s: %s", room, exc)
            return None
