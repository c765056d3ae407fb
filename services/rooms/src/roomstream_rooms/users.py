"""A user's sessions across the cluster: disconnect everywhere, revoke tokens issued before a time.

Served by the rooms service (it already answers for a user's rooms), but it keeps no state of
its own: the revocation cutoff is one Redis key per user (`StreamKeys.revoked`, raised by
`REVOKE_SCRIPT`, never lowered), read by every gateway at connect and on refresh; the effect on
open sockets travels as an event of the log (`user_kicked`, `tokens_revoked`, sharded by user)
that every gateway tails, so it reaches every gateway without knowing where the user is.

| call | who | effect |
|---|---|---|
| `POST /users/{user}/disconnect` | service, or the user itself | every open socket of the user, on every gateway, is closed with 1008 (the kick counter `StreamKeys.kicked` is raised first) |
| `POST /users/{user}/revoke` `{"before"?: seconds}` | service, or the user itself | tokens with `iat` < `before` (default: now) are refused at connect and on refresh; open sockets holding one are closed with 4401 |
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from roomstream_contracts.errors import ErrorCode
from roomstream_contracts.events import Envelope, EventKind, TokensRevokedData, UserKickedData
from roomstream_contracts.ids import SafeStr, new_event_id, now_ms
from roomstream_contracts.streams import StreamKeys
from roomstream_contracts.tokens import REVOKE_SCRIPT, NumericDate, TokenClaims, parse_cutoff
from roomstream_kit.auth import TokenVerifier
from roomstream_kit.eventlog import EventLog
from roomstream_kit.http import ApiError, JSONResponse, authenticate, json_body
from roomstream_kit.redis import AnyRedis
from roomstream_kit.service import on_state
from roomstream_kit.telemetry import inject_context
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .api import _user_param

FUTURE_CUTOFF_TOLERANCE_S = 60.0
"""A cutoff may lie at most this far ahead of our clock (the issuer's clock may run ahead)."""


class RevokeBody(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    before: NumericDate | None = Field(default=None, gt=0)
    """Seconds since the epoch (RFC 7519 NumericDate); tokens with `iat` below it are revoked."""


class DisconnectBody(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    reason: SafeStr = Field(default="", max_length=200)
    """Goes into the log (`user_kicked`): no U+0000 / surrogates, like every outside text."""


class UserSessionsApi:
    def __init__(
        self, *, verifier: TokenVerifier, eventlog: EventLog, redis: AnyRedis, keys: StreamKeys
    ) -> None:
        self.verifier = verifier
        self.eventlog = eventlog
        self.redis = redis
        self.keys = keys
        self._revoke = redis.register_script(REVOKE_SCRIPT)

    @classmethod
    def routes(cls) -> list[Route]:
        """Declared once, at construction; each endpoint runs on `request.state.users_api`."""
        return [
            Route(
                "/users/{user}/disconnect", on_state("users_api", cls.disconnect), methods=["POST"]
            ),
            Route("/users/{user}/revoke", on_state("users_api", cls.revoke), methods=["POST"]),
        ]

    async def _caller(self, request: Request, user: str) -> TokenClaims:
        claims = await authenticate(request, self.verifier)
        if not (claims.is_service or claims.sub == user):
            raise ApiError(ErrorCode.FORBIDDEN, "only a service or the user itself may do this")
        return claims

    def _envelope(self, kind: EventKind, user: str, data: dict[str, Any]) -> Envelope:
        return Envelope(
            id=new_event_id(),
            kind=kind,
            user=user,
            ts=now_ms(),
            data=data,
            trace=inject_context(),
        )

    async def disconnect(self, request: Request) -> Response:
        user = _user_param(request)
        claims = await self._caller(request, user)
        body = DisconnectBody.model_validate(await _optional_body(request))
        data = UserKickedData(by=claims.sub, reason=body.reason).model_dump()
        env = self._envelope(EventKind.USER_KICKED, user, data)
        # The counter first, then the event (like a revocation's cutoff): a gateway that read
        # the counter before it was raised had tracked its socket already, so the event reaches
        # that socket — or, if its control channel was down then, the re-read after it does.
        await self.redis.incr(self.keys.kicked(user))
        await self.eventlog.append(env)
        return JSONResponse({"user": user, "event": env.id}, status_code=202)

    async def revoke(self, request: Request) -> Response:
        user = _user_param(request)
        claims = await self._caller(request, user)
        body = RevokeBody.model_validate(await _optional_body(request))
        now = time.time()
        before = float(body.before) if body.before is not None else now
        if before > now + FUTURE_CUTOFF_TOLERANCE_S:
            raise ApiError(ErrorCode.BAD_REQUEST, "before lies in the future")
        # The cutoff first, then the event: a gateway that read the key before it was raised
        # had tracked its socket already, so the event reaches that socket (docs/architecture).
        raw = await self._revoke(keys=[self.keys.revoked(user)], args=[repr(before)])
        cutoff = parse_cutoff(raw)
        data = TokensRevokedData(before=cutoff or before, by=claims.sub).model_dump()
        env = self._envelope(EventKind.TOKENS_REVOKED, user, data)
        await self.eventlog.append(env)
        return JSONResponse({"user": user, "before": cutoff, "event": env.id})


async def _optional_body(request: Request) -> dict[str, Any]:
    if not await request.body():
        return {}
    obj = await json_body(request)
    if not isinstance(obj, dict):
        raise ApiError(ErrorCode.BAD_REQUEST, "the body must be a JSON object")
    return obj
