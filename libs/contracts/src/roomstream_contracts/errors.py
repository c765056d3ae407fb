"""Error codes and WebSocket close codes of the client protocol (PROTOCOL.md, "Errors", "Close codes")."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """The `code` of an `error` frame and of an HTTP error body."""

    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    # Extensions used by the HTTP APIs only (PROTOCOL.md allows new codes for new situations).
    UNAUTHORIZED = "unauthorized"
    CONFLICT = "conflict"


class CloseCode(IntEnum):
    """WebSocket close codes the gateway uses."""

    NORMAL = 1000
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    NOT_AUTHENTICATED = 4401
    AUTH_TIMEOUT = 4408


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAVAILABLE: 503,
}
"""The HTTP status that carries each error code in the service APIs."""


class ProtocolError(Exception):
    """A command or request that fails with a protocol error code.

    Raised by the pure parsing and validation code; the I/O layers turn it into an `error` frame
    (WebSocket) or an error body (HTTP).
    """

    def __init__(self, code: ErrorCode, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref
