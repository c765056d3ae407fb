"""JWT verification (every service) and issuing (service tokens, development tokens).

Keys: an HS* shared secret (`jwt_secret`), a static RS256 / ES256 public key (`jwt_public_key`),
or the issuer's JWKS (`jwks_url`, keys by `kid`, rotation: `roomstream_kit.jwks`). Optional
`iss` / `aud` checks. `exp` / `iat` / `nbf` are RFC 7519 NumericDates (floats allowed, strings
refused) and are checked here, not by PyJWT (which truncates them to integers).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jwt
from pydantic import ValidationError
from roomstream_contracts.streams import StreamKeys
from roomstream_contracts.tokens import SERVICE_ROLE, TokenClaims, parse_cutoff, secret_problem

from .jwks import JwksKeys, KeysUnavailable, UnknownKey
from .settings import CommonSettings

__all__ = [
    "AuthError",
    "KeysUnavailable",
    "TokenVerifier",
    "issue_token",
    "redis_cutoff",
    "refuse_insecure_secret",
    "service_token",
]

FUTURE_IAT_TOLERANCE_S = 60.0
"""An `iat` further in the future than this is refused (a revocation compares `iat`: a token
"issued" far ahead would outlive every revocation). Covers clock skew between issuer and us."""


class AuthError(Exception):
    """A token is missing, malformed, wrongly signed, expired or otherwise not acceptable."""


RevocationCutoff = Callable[[str], Awaitable[float | None]]
"""user → the user's token revocation cutoff (seconds), or None: a read of `NS:revoked:USER`."""


def redis_cutoff(redis: Any, keys: StreamKeys) -> RevocationCutoff:
    """The `cutoff` of a service with a Redis client: reads the key the rooms API raises."""

    async def read(user: str) -> float | None:
        return parse_cutoff(await redis.get(keys.revoked(user)))

    return read


class TokenVerifier:
    """Verifies bearer tokens with the configured algorithm and key (or JWKS).

    `cutoff`, when a service sets it, makes `authenticate` (the HTTP APIs) refuse revoked tokens
    as the gateway does at connect: a revoked (stolen) token must not keep working on the APIs."""

    cutoff: RevocationCutoff | None = None

    def __init__(self, settings: CommonSettings) -> None:
        self._issuer = settings.jwt_issuer or None
        self._audience = settings.jwt_audience or None
        self.jwks: JwksKeys | None = None
        self._algorithm = settings.jwt_algorithm
        self._key: str = ""
        if settings.jwks_url:
            self.jwks = JwksKeys(
                settings.jwks_url,
                min_refresh_s=settings.jwks_refresh_min_s,
                max_age_s=settings.jwks_cache_s,
                timeout_s=settings.jwks_timeout_s,
            )
        elif self._algorithm.startswith("HS"):
            self._key = settings.jwt_secret
        else:
            pem = settings.jwt_public_key or ""
            if pem and not pem.lstrip().startswith("-----"):
                pem = Path(pem).read_text()
            if not pem:
                raise ValueError(f"ROOMSTREAM_JWT_PUBLIC_KEY is required for {self._algorithm}")
            self._key = pem

    def verify(self, token: str | None) -> TokenClaims:
        """Verify without I/O. With a JWKS, only keys already cached are used: prefer
        `averify`, which fetches the set when the token names a new key."""
        if self.jwks is None:
            return self._decode(_present(token), self._key, self._algorithm)
        token = _present(token)
        kid, alg = _key_id(token)
        key = self.jwks.cached(kid)
        if key is None:
            raise AuthError("unknown signing key")
        return self._decode_jwk(token, key, alg)

    async def averify(self, token: str | None) -> TokenClaims:
        """Verify; with a JWKS, fetch it (rate-bounded) for a `kid` it does not know yet.

        Raises `AuthError` for a bad token and `KeysUnavailable` when no JWKS could be had."""
        if self.jwks is None:
            return self.verify(token)
        token = _present(token)
        kid, alg = _key_id(token)
        try:
            key = await self.jwks.key(kid)
        except UnknownKey as exc:
            raise AuthError(str(exc)) from None
        return self._decode_jwk(token, key, alg)

    def _decode_jwk(self, token: str, key: Any, alg: str) -> TokenClaims:
        if alg != key.algorithm_name:
            raise AuthError(f"invalid token: algorithm {alg[:16]!r} does not match its key")
        return self._decode(token, key.key, key.algorithm_name)

    def _decode(self, token: str, key: Any, algorithm: str) -> TokenClaims:
        require = ["exp", "sub"]
        if self._issuer:
            require.append("iss")
        if self._audience:
            require.append("aud")
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self._issuer,
                audience=self._audience,
                options={
                    "require": require,
                    # NumericDates are checked below, as floats (PyJWT truncates them and
                    # accepts numeric strings, against RFC 7519).
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_iss": self._issuer is not None,
                    "verify_aud": self._audience is not None,
                },
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        except Exception:  # e.g. a payload nested deep enough for a RecursionError
            raise AuthError("invalid token") from None
        try:
            claims = TokenClaims.model_validate(payload)
        except ValidationError as exc:
            bad = sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]})
            raise AuthError(f"invalid token claims: {', '.join(bad)[:60]}") from None
        now = time.time()
        if claims.exp <= now:
            raise AuthError("token expired")
        if claims.nbf is not None and claims.nbf > now:
            raise AuthError("token not valid yet (nbf)")
        if claims.iat is not None and claims.iat > now + FUTURE_IAT_TOLERANCE_S:
            raise AuthError("token issued in the future (iat)")
        return claims


def _present(token: str | None) -> str:
    if not token:
        raise AuthError("missing token")
    return token


def _key_id(token: str) -> tuple[str, str]:
    """The `kid` and `alg` of a token's (unverified) header."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    except Exception:
        raise AuthError("invalid token") from None
    kid, alg = header.get("kid"), header.get("alg")
    if not isinstance(kid, str) or not kid or not isinstance(alg, str):
        raise AuthError("invalid token: a JWKS token needs `kid` and `alg` headers")
    return kid, alg


def issue_token(
    secret: str,
    user: str,
    *,
    ttl_s: float = 24 * 3600,
    role: str | None = None,
    algorithm: str = "HS256",
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    """A signed token for `user` (development runner, tests, service-to-service calls)."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": user, "iat": now, "exp": now + int(ttl_s)}
    if role:
        claims["role"] = role
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm=algorithm)


def service_token(settings: CommonSettings) -> str:
    """The token this process presents to other services."""
    if settings.service_token:
        return settings.service_token
    if settings.jwks_url or not settings.jwt_algorithm.startswith("HS"):
        raise ValueError(
            "ROOMSTREAM_SERVICE_TOKEN is required with asymmetric JWT algorithms or a JWKS"
        )
    return issue_token(
        settings.jwt_secret,
        "service",
        ttl_s=365 * 24 * 3600,
        role=SERVICE_ROLE,
        algorithm=settings.jwt_algorithm,
        issuer=settings.jwt_issuer or None,
        audience=settings.jwt_audience or None,
    )


def insecure_secret(settings: CommonSettings) -> str | None:
    """Why this process must not start with its HS* secret (None: it may, or none is used).

    The development secret and secrets shorter than RFC 7518 asks are allowed only under the
    development runner (`ROOMSTREAM_DEV_MODE=1`, set by `roomstream up`)."""
    if settings.dev_mode or settings.jwks_url or not settings.jwt_algorithm.startswith("HS"):
        return None
    return secret_problem(settings.jwt_secret, settings.jwt_algorithm)


def refuse_insecure_secret(settings: CommonSettings, service: str) -> None:
    """Exit with status 2 and a clear message when `insecure_secret` finds a problem: called
    by every service's entry point before it starts serving."""
    problem = insecure_secret(settings)
    if problem is not None:
        sys.stderr.write(f"roomstream-{service}: refusing to start: {problem}\n")
        sys.stderr.flush()
        raise SystemExit(2)
