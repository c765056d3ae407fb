"""Handshake checks: the Origin allow-list and where a socket's token comes from.

Pure functions over the upgrade request's headers and path; verification itself is
`roomstream_kit.auth.TokenVerifier`.
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers


def origin_allowed(origin: str | None, allowed: Collection[str]) -> bool:
    """Whether a request with this Origin header may connect.

    An empty allow-list allows all; a request without Origin (not a browser) is allowed.
    """
    if origin is None or not allowed:
        return True
    return origin.rstrip("/") in allowed


def split_path(path: str) -> tuple[str, dict[str, list[str]]]:
    """The path without its query, and the query's parameters (`ValueError` if unparsable)."""
    parts = urlsplit(path)
    return parts.path, parse_qs(parts.query)


def single_header(headers: Headers, name: str) -> str | None:
    """A header that must appear at most once; `ValueError` when it is repeated (a repeated
    Origin or Authorization is ambiguous: the request is refused rather than guessed at)."""
    values = headers.get_all(name)
    if len(values) > 1:
        raise ValueError(f"repeated {name} header")
    return values[0] if values else None


def token_from_request(headers: Headers, path: str) -> str | None:
    """The token of the `Authorization: Bearer` header, else of the `access_token` parameter.

    None means "expect an `auth` frame". A present but empty or non-bearer value is returned as
    "" so that it fails verification (4401) instead of waiting for a frame.
    """
    try:
        auth = single_header(headers, "Authorization")
        query = split_path(path)[1]
    except ValueError:
        return ""  # fails verification: 4401
    if auth is not None:
        scheme, _, value = auth.strip().partition(" ")
        return value.strip() if scheme.lower() == "bearer" else ""
    values = query.get("access_token")
    if values is not None:
        return values[0]
    if "access_token=" in path:
        return ""
    return None
