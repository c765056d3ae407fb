"""Exceptions raised by the client."""

from __future__ import annotations

from roomstream_contracts.errors import CloseCode

FATAL_CLOSE_CODES: frozenset[int] = frozenset(
    {
        CloseCode.NOT_AUTHENTICATED,
        CloseCode.AUTH_TIMEOUT,
        CloseCode.POLICY_VIOLATION,
        CloseCode.MESSAGE_TOO_BIG,
    }
)
"""Close codes after which reconnecting cannot help (the same token or frame fails again)."""


class ClientError(Exception):
    """Base class of every error the client raises."""


class CommandError(ClientError):
    """The gateway answered a command with an `error` frame (the connection stays open)."""

    def __init__(
        self, code: str, message: str, ref: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.ref = ref
        self.retry_after = retry_after


class ConnectionClosedFatal(ClientError):
    """The gateway closed the connection with a code that is not retried (4401, 4408, 1008, 1009)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed with {code} {reason}".strip())
        self.code = code
        self.reason = reason


class ConnectionLost(ClientError):
    """A command that is not safe to repeat was in flight when the connection was lost."""


class ClientClosed(ClientError):
    """The client was closed."""
