"""The HTTP API: history pages, deep replay and recovery information (PROTOCOL.md)."""

from __future__ import annotations

from typing import Any

import orjson
from roomstream_contracts.codec import entry_envelope, event_body
from roomstream_contracts.errors import ErrorCode, ProtocolError
from roomstream_contracts.ids import is_room_id
from roomstream_contracts.tokens import TokenClaims
from roomstream_kit.auth import TokenVerifier, redis_cutoff
from roomstream_kit.http import JSONResponse, authenticate
from roomstream_kit.redis import AnyRedis
from roomstream_kit.service import on_state
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .access import Access
from .cache import LatestCache
from .metrics import HistoryMetrics
from .model import PageQuery, parse_page_query, parse_since, recovery, row_body
from .settings import HistorySettings
from .store import HistoryStore


class HistoryApi:
    def __init__(
        self,
        settings: HistorySettings,
        redis: AnyRedis,
        store: HistoryStore,
        access: Access,
        cache: LatestCache,
        metrics: HistoryMetrics,
    ) -> None:
        self.settings = settings
        self.keys = settings.keys
        self.redis = redis
        self.store = store
        self.access = access
        self.cache = cache
        self.metrics = metrics
        self.verifier = TokenVerifier(settings)
        self.verifier.cutoff = redis_cutoff(redis, self.keys)  # revoked tokens: 401

    @classmethod
    def routes(cls) -> list[Route]:
        """Declared once, at construction; each endpoint runs on `request.state.history_api`."""
        return [
            Route("/rooms/{room}/messages", on_state("history_api", cls.messages), methods=["GET"]),
            Route("/rooms/{room}/recovery", on_state("history_api", cls.recovery), methods=["GET"]),
        ]

    async def _room(self, request: Request, claims: TokenClaims) -> str:
        room = str(request.path_params["room"])
        if not is_room_id(room):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "invalid room id")
        await self.access.check(room, claims)
        return room

    async def messages(self, request: Request) -> Response:
        """`{"events": [...ascending], "more": bool, "first_available": int}`."""
        claims = await authenticate(request, self.verifier)
        query = parse_page_query(
            request.query_params,
            default=self.settings.page_default,
            maximum=self.settings.page_max,
        )
        room = await self._room(request, claims)
        cacheable = query.is_latest and query.limit == self.settings.page_default
        gen = "0"
        if cacheable:
            cached, gen = await self.cache.get(room)
            if cached is not None:
                return Response(cached, media_type="application/json")
        answer = await self.page(room, query)
        body = orjson.dumps(answer)
        if cacheable:
            await self.cache.put(room, gen, body)
        return Response(body, media_type="application/json")

    async def page(self, room: str, query: PageQuery) -> dict[str, Any]:
        rows, more = await self.store.page(room, query)
        events = [row_body(r) for r in rows]
        first = await self.store.first_available(room)
        if query.after is not None and not more and len(events) < query.limit:
            start = events[-1]["seq"] if events else max(query.after, first - 1)
            tail, more = await self._from_recent(room, start, query.limit - len(events), query)
            events.extend(tail)
        return {"events": events, "more": more, "first_available": first}

    async def _from_recent(
        self, room: str, last: int, count: int, query: PageQuery
    ) -> tuple[list[dict[str, Any]], bool]:
        """Events after `last` not yet in Postgres, from the room's recent buffer in Redis.

        Postgres trails the log by the consumer's lag (longer while Postgres is down); the
        newest events are always in the recent buffer, so a replay has no gap at its end.
        """
        top_raw = await self.redis.hget(self.keys.seq(self.keys.room_shard(room)), room)
        top = int(top_raw) if top_raw is not None else 0
        if query.before is not None:
            top = min(top, query.before - 1)
        if last >= top:
            return [], False
        raw: Any = await self.redis.xrange(
            self.keys.recent(room), f"{last + 1}-0", "+", count=count
        )
        out: list[dict[str, Any]] = []
        for _, fields in raw:
            env = orjson.loads(entry_envelope(fields))
            seq = env.get("seq")
            if seq != last + 1:
                break
            if seq > top:
                break
            out.append(event_body(env))
            last = seq
        if not out and last < top:
            raise ProtocolError(
                ErrorCode.UNAVAILABLE, "history is catching up with the log; retry shortly"
            )
        return out, last < top

    async def recovery(self, request: Request) -> Response:
        """`{"room", "since", "first_available", "recovered"}`: can a replay after `since` be
        complete? `recovered` is false only when history retention deleted part of it."""
        claims = await authenticate(request, self.verifier)
        since = parse_since(request.query_params.get("since"))
        room = await self._room(request, claims)
        first = await self.store.first_available(room)
        return JSONResponse({"room": room, **recovery(since, first)})
