"""The `reason` of `POST /users/{user}/disconnect` goes into the log (`user_kicked`), so it obeys the
rule of every text that reaches the log from outside (docs/protocol.md, "Refused input"): one
holding U+0000 is refused with 400 `bad_request` and nothing is appended."""

from __future__ import annotations

from tests.rooms.helpers import FAST_ENV, ROOMS, api, auth, log_envelopes


async def test_disconnect_reason_with_nul_is_refused(cluster, namespace, redis_client) -> None:
    rooms = cluster.start(ROOMS, env=FAST_ENV, name="rooms")
    async with api(rooms.url) as http:
        r = await http.post("/users/ann/disconnect", json={"reason": "bye\x00now"}, headers=auth())
        assert r.status_code == 400, (r.status_code, r.text)
        assert r.json()["error"]["code"] == "bad_request", r.text
        kicked = [
            e for e in await log_envelopes(redis_client, namespace) if e["kind"] == "user_kicked"
        ]
        assert kicked == []
        # A clean reason still works (and is appended).
        r = await http.post("/users/ann/disconnect", json={"reason": "bye now"}, headers=auth())
        assert r.status_code == 202, r.text
        kicked = [
            e for e in await log_envelopes(redis_client, namespace) if e["kind"] == "user_kicked"
        ]
        assert len(kicked) == 1
