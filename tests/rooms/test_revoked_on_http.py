"""A revoked token (`POST /users/{user}/revoke`) is refused by the rooms and history HTTP APIs too
(401 `unauthorized`), not only at the gateway's connect: found by the adversarial review, where a
revoked (stolen) token still read a private room's history and added a member to it as its
owner."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import make_token, service_token
from tests.gateway.helpers import close_code, open_ws
from tests.rooms.helpers import FAST_ENV, ROOMS
from tests.support.together import Spec, start_together


async def test_revoked_token_is_refused_by_the_http_apis(cluster) -> None:
    rooms_spec = Spec(ROOMS, "rooms", FAST_ENV)
    history_spec = Spec("roomstream_history", "history", {"ROOMSTREAM_ROOMS_URL": rooms_spec.url})
    gw_env = {"ROOMSTREAM_ROOMS_URL": rooms_spec.url, "ROOMSTREAM_HISTORY_URL": history_spec.url}
    rooms, history, gw = await start_together(
        cluster,
        rooms_spec,
        history_spec,
        Spec("roomstream_gateway", "gw", gw_env, ready_path="/healthz"),
    )
    old = {"Authorization": f"Bearer {make_token('ann')}"}
    service = {"Authorization": f"Bearer {service_token()}"}
    async with httpx.AsyncClient(timeout=30) as http:
        body = {"id": "vault", "name": "Vault", "kind": "private"}
        assert (await http.post(f"{rooms.url}/rooms", json=body, headers=old)).status_code == 201
        await asyncio.sleep(1.1)  # the revocation's cutoff (now) lies after the token's iat
        r = await http.post(f"{rooms.url}/users/ann/revoke", json={}, headers=service)
        assert r.status_code == 200, r.text
        assert (
            await close_code(await open_ws(gw.ws_url, token=old["Authorization"][7:]), 10) == 4401
        )
        calls = [
            ("GET", f"{history.url}/rooms/vault/messages"),
            ("GET", f"{rooms.url}/rooms/vault"),
            ("GET", f"{rooms.url}/rooms/vault/members"),
            ("PUT", f"{rooms.url}/rooms/vault/members/mallory"),
            ("DELETE", f"{rooms.url}/rooms/vault/members/ann"),
        ]
        for method, url in calls:
            r = await http.request(method, url, headers=old)
            assert r.status_code == 401, (method, url, r.status_code, r.text)
            assert r.json()["error"]["code"] == "unauthorized", r.text
        r = await http.get(f"{rooms.url}/rooms/vault/members", headers=service)
        assert r.json() == {"members": ["ann"]}, r.text  # mallory was not added
        # A token issued after the cutoff works.
        await asyncio.sleep(1.1)
        fresh = {"Authorization": f"Bearer {make_token('ann')}"}
        assert (
            await http.get(f"{history.url}/rooms/vault/messages", headers=fresh)
        ).status_code == 200
        assert (await http.get(f"{rooms.url}/rooms/vault", headers=fresh)).status_code == 200
