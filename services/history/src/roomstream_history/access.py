"""Who may read a room's history: the room must exist; private rooms are for members only.

Membership is read in one place: the append script's roster (the membership authority,
`roomstream_kit.eventlog.room_access`, docs/architecture.md). A room whose roster is not seeded yet
(created before rosters existed) is asked of the rooms service, which owns membership (and seeds
the roster on that read); while it cannot answer, `unavailable`.
"""

from __future__ import annotations

import logging

import httpx
from roomstream_contracts.errors import ErrorCode, ProtocolError
from roomstream_contracts.streams import StreamKeys
from roomstream_contracts.tokens import TokenClaims
from roomstream_kit.eventlog import room_access
from roomstream_kit.redis import AnyRedis

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

    async def check(self, room: str, claims: TokenClaims) -> None:
        """Raise `not_found` for an unknown room, `forbidden` for a non-member of a private room,
        `unavailable` when neither the roster nor the rooms service can say."""
        exists, kind, member = await room_access(self.redis, self.keys, room, claims.sub)
        if not exists and not await self.store.room_created(room):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no room {room!r}")
        if claims.is_service:
            return
        if kind is not None:  # the authority, never a read model updated later
            allowed = kind != "private" or member
        else:
            answer = await self._from_rooms_api(room, claims.sub)
            if answer is None:
                raise ProtocolError(ErrorCode.UNAVAILABLE, "room membership unavailable, retry")
            allowed = answer
        if not allowed:
            raise ProtocolError(ErrorCode.FORBIDDEN, "members only: this room is private")

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
