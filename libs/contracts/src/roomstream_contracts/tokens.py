"""The claims of roomstream's JWTs (PROTOCOL.md, "Connection" and "Service HTTP APIs"), the
rules a signing secret must meet, and the per-user revocation record."""

from __future__ import annotations

from typing import Annotated

from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, Strict, StrictInt

from .ids import UserId

SERVICE_ROLE = "service"
DEV_JWT_SECRET = "roomstream-development-secret-change-me"
"""The HS256 secret of the local development runner, unless ROOMSTREAM_JWT_SECRET says otherwise."""

MIN_SECRET_BYTES: dict[str, int] = {"HS256": 32, "HS384": 48, "HS512": 64}
"""Shortest HMAC secret per algorithm (RFC 7518 §3.2: a key at least as long as the hash)."""

MAX_NUMERIC_DATE = 253402300799
"""9999-12-31T23:59:59Z: later dates are refused (they overflow floats, 64-bit JSON, timers)."""

NumericDate = (
    Annotated[StrictInt, Field(ge=0, le=MAX_NUMERIC_DATE)]
    | Annotated[float, Strict(), AllowInfNan(False), Field(ge=0, le=MAX_NUMERIC_DATE)]
)
"""RFC 7519 §2 NumericDate: seconds since the epoch, an integer or not; never a string or bool."""


class TokenClaims(BaseModel):
    """What a verified token says: `sub` is the user id, `exp` is required.

    `exp`, `iat` and `nbf` are NumericDates (RFC 7519): a float is accepted, a string is refused.
    `iat` is what a revocation compares against (`revoked_before`).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    sub: UserId
    """The user id: 1 to 128 characters, never U+0000 or a lone surrogate (`ids.check_storable`)."""
    exp: NumericDate
    iat: NumericDate | None = None
    nbf: NumericDate | None = None
    role: str | None = None

    @property
    def is_service(self) -> bool:
        return self.role == SERVICE_ROLE

    def revoked_by(self, before: float | None) -> bool:
        """Whether a revocation of the user's tokens issued before `before` (seconds) covers
        this token. A token without `iat` cannot prove it is newer: it is covered."""
        if before is None:
            return False
        return self.iat is None or self.iat < before


def secret_problem(secret: str, algorithm: str) -> str | None:
    """Why `secret` must not sign `algorithm` tokens outside the development runner, or None."""
    if secret == DEV_JWT_SECRET:
        return (
            "ROOMSTREAM_JWT_SECRET is the public development secret; set a random secret of "
            f"at least {MIN_SECRET_BYTES.get(algorithm, 32)} bytes (the development runner "
            "`roomstream up` alone may use it)"
        )
    need = MIN_SECRET_BYTES.get(algorithm)
    if need is not None and len(secret.encode()) < need:
        return (
            f"ROOMSTREAM_JWT_SECRET is {len(secret.encode())} bytes; {algorithm} needs at "
            f"least {need} random bytes"
        )
    return None


REVOKE_SCRIPT = """
-- roomstream revoke: raise a user's revocation cutoff, never lower it.
-- KEYS: 1 the user's revocation key (StreamKeys.revoked); ARGV: 1 cutoff, seconds since the epoch
-- Returns the cutoff in force afterwards.
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) >= tonumber(ARGV[1]) then return current end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""
"""A revocation moves the cutoff forward only: a late or repeated call cannot un-revoke."""


def parse_cutoff(raw: bytes | str | None) -> float | None:
    """The value of a revocation key (None: nothing revoked)."""
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None
