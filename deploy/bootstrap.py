"""One-shot set-up of a fresh compose deployment: create the public room `general`.

Run by the `bootstrap` service of compose.yaml once the rooms service is healthy. Idempotent: an
existing room (409) is left alone, so it is safe on every `docker compose up`. Settings from the
services' environment (`ROOMSTREAM_ROOMS_URL`, `ROOMSTREAM_JWT_SECRET`).
"""

from __future__ import annotations

import asyncio
import sys

import httpx
from roomstream_kit.auth import service_token
from roomstream_kit.settings import CommonSettings

ROOM = {"id": "general", "name": "General", "kind": "public"}


async def main(attempts: int = 60) -> int:
    settings = CommonSettings()
    headers = {"Authorization": f"Bearer {service_token(settings)}"}
    url = f"{settings.rooms_url.rstrip('/')}/rooms"
    async with httpx.AsyncClient(timeout=10.0) as http:
        for _ in range(attempts):
            try:
                r = await http.post(url, json=ROOM, headers=headers)
            except httpx.HTTPError as exc:
                r = None
                print(f"bootstrap: rooms API not reachable ({exc}); retrying", file=sys.stderr)
            if r is not None and r.status_code in (201, 409):
                state = "created" if r.status_code == 201 else "already exists"
                print(f"bootstrap: room {ROOM['id']!r} {state}")
                return 0
            if r is not None:
                print(f"bootstrap: rooms API answered {r.status_code}; retrying", file=sys.stderr)
            await asyncio.sleep(1.0)
    print("bootstrap: could not create the room", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
