"""Calls to the rooms and history services (HTTP, service token), errors as protocol errors."""

from __future__ import annotations

from typing import Any

import httpx
from roomstream_contracts.errors import ErrorCode, ProtocolError

POOL_WAIT_S = 30.0
"""How long a call may wait for one of the client's connections (100): in a reconnect storm
hundreds of joins fetch their missed events from history at once; they queue for a connection
rather than fail `unavailable` after the request timeout (each then retried by its client)."""


class Upstream:
    """One pooled HTTP client for the rooms and history APIs."""

    def __init__(self, rooms_url: str, history_url: str, token: str, timeout_s: float) -> None:
        self.rooms_url = rooms_url.rstrip("/")
        self.history_url = history_url.rstrip("/")
        self.client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout_s, pool=POOL_WAIT_S),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _get(self, url: str, params: dict[str, Any] | None = None) -> httpx.Response:
        try:
            return await self.client.get(url, params=params)
        except httpx.HTTPError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"service unreachable: {exc}") from None

    async def room(self, room: str) -> dict[str, Any] | None:
        """The room record from the rooms API (which refills the Redis read model); None if 404."""
        r = await self._get(f"{self.rooms_url}/rooms/{room}")
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"rooms service answered {r.status_code}")
        body: dict[str, Any] = r.json()
        return body

    async def messages(
        self,
        room: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 200,
    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of event bodies (ascending seq) and whether more exist."""
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        if before is not None:
            params["before"] = before
        r = await self._get(f"{self.history_url}/rooms/{room}/messages", params)
        if r.status_code == 404:
            return [], False
        if r.status_code in (400, 413):
            raise ProtocolError(ErrorCode.BAD_REQUEST, _error_message(r))
        if r.status_code != 200:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"history service answered {r.status_code}")
        body = r.json()
        return list(body.get("events") or []), bool(body.get("more"))


def _error_message(response: httpx.Response) -> str:
    """The `message` of a service's error body, or its status."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"history service answered {response.status_code}"
