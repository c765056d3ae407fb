"""The claims of roomstream's JWTs (PROTOCOL.md, "Connection" and "Service HTTP APIs")."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from .ids import UserId

SERVICE_ROLE = "service"
DEV_JWT_SECRET = "roomstream-development-secret-change-me"
"""The HS256 secret of the local development runner, unless ROOMSTREAM_JWT_SECRET says otherwise."""


class TokenClaims(BaseModel):
    """What a verified token says: `sub` is the user id, `exp` is required."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    sub: UserId
    """The user id: 1 to 128 characters, never U+0000 or a lone surrogate (`ids.check_storable`)."""
    exp: int
    role: str | None = None

    @property
    def is_service(self) -> bool:
        return self.role == SERVICE_ROLE
