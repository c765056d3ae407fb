"""JWT verification (every service) and issuing (service tokens, development tokens)."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
from pydantic import ValidationError
from roomstream_contracts.tokens import SERVICE_ROLE, TokenClaims

from .settings import CommonSettings


class AuthError(Exception):
    """A token is missing, malformed, wrongly signed or expired."""


class TokenVerifier:
    """Verifies bearer tokens with the configured algorithm and key."""

    def __init__(self, settings: CommonSettings) -> None:
        self._algorithm = settings.jwt_algorithm
        if self._algorithm.startswith("HS"):
            self._key: str = settings.jwt_secret
        else:
            pem = settings.jwt_public_key or ""
            if pem and not pem.lstrip().startswith("-----"):
                pem = Path(pem).read_text()
            if not pem:
                raise ValueError(f"ROOMSTREAM_JWT_PUBLIC_KEY is required for {self._algorithm}")
            self._key = pem

    def verify(self, token: str | None) -> TokenClaims:
        if not token:
            raise AuthError("missing token")
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        try:
            return TokenClaims.model_validate(payload)
        except ValidationError:
            raise AuthError("invalid token claims") from None


def issue_token(
    secret: str,
    user: str,
    *,
    ttl_s: float = 24 * 3600,
    role: str | None = None,
    algorithm: str = "HS256",
) -> str:
    """A signed token for `user` (development runner, tests, service-to-service calls)."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": user, "iat": now, "exp": now + int(ttl_s)}
    if role:
        claims["role"] = role
    return jwt.encode(claims, secret, algorithm=algorithm)


def service_token(settings: CommonSettings) -> str:
    """The token this process presents to other services."""
    if settings.service_token:
        return settings.service_token
    if not settings.jwt_algorithm.startswith("HS"):
        raise ValueError("ROOMSTREAM_SERVICE_TOKEN is required with asymmetric JWT algorithms")
    return issue_token(
        settings.jwt_secret,
        "service",
        ttl_s=365 * 24 * 3600,
        role=SERVICE_ROLE,
        algorithm=settings.jwt_algorithm,
    )
