"""An HTTP answer for every request the WebSocket handshake parser refuses.

websockets parses the request before `process_request` runs, and when the request has a body
(`POST /ws` with `Content-Length` or `Transfer-Encoding`, the usual shape of a POST) or a request
line it cannot read, it drops the connection without a word. `GatewayConnection` gives the
handshake its own parser that answers instead: **405** with `Allow: GET` for any method but GET
(every route of the gateway is a GET), **400** for a GET with a body or an unreadable request;
too-long lines and headers keep websockets' own 414 / 431. Everything after the request (the
upgrade, frames) is websockets' unchanged.
"""

from __future__ import annotations

import http
from collections.abc import Generator
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import (
    HeaderLineTooLong,
    InvalidMessage,
    RequestLineTooLong,
    TooManyHeaders,
)
from websockets.http11 import Request, Response
from websockets.protocol import CONNECTING, Protocol
from websockets.server import ServerProtocol

from .http import error_response


def refusal(method: bytes, problem: str) -> Response:
    """The answer to a request the handshake cannot take (pure)."""
    if method != b"GET":
        name = method.decode("ascii", "replace")[:16]
        response = error_response(405, "bad_request", f"method {name} not allowed: use GET")
        response.headers["Allow"] = "GET"
        return response
    return error_response(400, "bad_request", f"bad request: {problem}"[:200])


def _parse(protocol: ServerProtocol) -> Generator[None]:
    """`ServerProtocol.parse`, except that a refused request gets an HTTP answer."""
    if protocol.state is CONNECTING:
        first: list[bytes] = []

        def read_line(
            m: int, too_long: type[Exception]
        ) -> Generator[None, None, bytes | bytearray]:
            line = yield from protocol.reader.read_line(m, too_long)
            if not first:
                first.append(bytes(line))
            return line

        try:
            request = yield from Request.parse(read_line)
        except (RequestLineTooLong, HeaderLineTooLong, TooManyHeaders) as exc:
            protocol.handshake_exc = exc
            status = (
                http.HTTPStatus.REQUEST_URI_TOO_LONG
                if isinstance(exc, RequestLineTooLong)
                else http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
            )
            protocol.send_response(protocol.reject(status, f"{exc}.\n"))
            yield
            return
        except EOFError as exc:  # closed before a full request: nobody to answer
            protocol.handshake_exc = InvalidMessage("did not receive a valid HTTP request")
            protocol.handshake_exc.__cause__ = exc
            protocol.send_eof()
            protocol.parser = protocol.discard()
            next(protocol.parser)
            yield
            return
        except Exception as exc:  # a body, Transfer-Encoding, a bad request line, ...
            protocol.handshake_exc = InvalidMessage("did not receive a valid HTTP request")
            protocol.handshake_exc.__cause__ = exc
            line = first[0] if first else b""
            method = line.split(b" ", 1)[0] if b" " in line else b"GET"
            protocol.send_response(refusal(method, str(exc)))
            yield
            return
        protocol.events.append(request)
        # This generator lives as long as the socket: drop what only the handshake needed.
        del first, read_line, request
    yield from Protocol.parse(protocol)


class GatewayConnection(ServerConnection):
    """websockets' server connection with the answering handshake parser (`create_connection`),
    and the state of the gateway-wide keepalive (`keepalive.Keepalive`)."""

    def __init__(self, protocol: ServerProtocol, *args: Any, **kwargs: Any) -> None:
        # Nothing was read yet: swap the parser that ServerProtocol started for ours.
        protocol.parser = _parse(protocol)
        next(protocol.parser)
        super().__init__(protocol, *args, **kwargs)
        # A list instead of websockets' deque (append, remove, iterate only): a deque allocates
        # a 64-slot block up front, ~700 B per idle socket that never waits for a drain.
        self.drain_waiters = []  # type: ignore[assignment]
        self.ka_slot: dict[GatewayConnection, None] | None = None
        """The keepalive slot this socket is pinged in (`keepalive.Keepalive`); None when not
        tracked."""
        self.ka_sent = 0.0
        """Loop time of the keepalive ping not answered yet; 0.0 when none is outstanding."""

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.leave_keepalive()  # nothing to ping any more

    def leave_keepalive(self) -> None:
        if self.ka_slot is not None:
            self.ka_slot.pop(self, None)
            self.ka_slot = None

    def acknowledge_pings(self, data: bytes) -> None:
        """Any pong answers the keepalive's ping (it sends an empty one); pings sent through
        `ping()` are still matched by websockets."""
        self.ka_sent = 0.0
        if self.pending_pings:
            super().acknowledge_pings(data)
