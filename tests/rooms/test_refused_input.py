"""U+0000 (and lone surrogates) are refused at every edge, with real processes: the WebSocket
commands (`bad_request`, the socket stays open), a token whose `sub` holds one (4401 at connect,
401 on the HTTP APIs), and the rooms and history APIs' bodies and path parameters (400 with the
JSON error body, never a 500)."""

from __future__ import annotations

import json

import httpx
import jwt

from tests.conftest import JWT_SECRET, make_token, service_token
from tests.gateway.helpers import client, close_code, open_ws, request
from tests.rooms.helpers import FAST_ENV, ROOMS, api, auth
from tests.support.together import Spec, start_together

NUL = "\x00"
SURROGATE = json.loads('"\\ud800"')
"""A lone surrogate, as the standard library's JSON parser (PyJWT's) turns `\\ud800` into."""


def token_with_sub(sub: str) -> str:
    # PyJWT writes the payload with json.dumps (ensure_ascii): `\u0000` / `\ud800` escapes.
    return jwt.encode({"sub": sub, "exp": 4_000_000_000}, JWT_SECRET, algorithm="HS256")


def bad_request(r: httpx.Response) -> None:
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.json()["error"]["code"] == "bad_request", r.text


async def test_nul_is_refused_at_every_edge(cluster) -> None:
    rooms_spec = Spec(ROOMS, "rooms", FAST_ENV)
    history_spec = Spec("roomstream_history", "history", {"ROOMSTREAM_ROOMS_URL": rooms_spec.url})
    gw_env = {
        "ROOMSTREAM_ROOMS_URL": rooms_spec.url,
        "ROOMSTREAM_HISTORY_URL": history_spec.url,
        "ROOMSTREAM_DEV_LOGIN": "1",
    }
    rooms, history, gw = await start_together(
        cluster,
        rooms_spec,
        history_spec,
        Spec("roomstream_gateway", "gw", gw_env, ready_path="/healthz"),
    )
    async with api(rooms.url) as http:
        r = await http.post(
            "/rooms", json={"id": "clean", "name": "Clean", "kind": "public"}, headers=auth("ann")
        )
        assert r.status_code == 201, r.text

        # -- WebSocket commands: bad_request, the connection stays open.
        ws, _ = await client(gw.ws_url, "ann")
        frames = [
            {"type": "send", "room": "clean", "text": f"a{NUL}b", "id": "m1"},
            {"type": "send", "room": "clean", "text": "ok", "id": f"m{NUL}"},
            {"type": "edit", "room": "clean", "seq": 1, "text": f"x{NUL}"},
            {"type": "join", "room": f"clean{NUL}"},
            {"type": "history", "room": f"c{NUL}"},
        ]
        for frame in frames:
            reply = await request(ws, frame)
            assert reply["type"] == "error" and reply["code"] == "bad_request", (frame, reply)
        ack = await request(ws, {"type": "send", "room": "clean", "text": "fine", "id": "m2"})
        assert ack["type"] == "ack", ack
        # A lone surrogate escape is not valid JSON text: bad_request too.
        await ws.send('{"type":"send","room":"clean","text":"\\ud800","id":"m3","ref":"s"}')
        reply = await request(ws, {"type": "ping"})
        assert reply["type"] == "pong"
        await ws.close()

        # -- a token whose sub holds NUL or a lone surrogate: 4401 at connect, 401 on HTTP.
        for sub in (f"ev{NUL}il", f"ev{SURROGATE}il"):
            token = token_with_sub(sub)
            for via in ("header", "frame"):
                sock = await open_ws(gw.ws_url, token=token, via=via)
                assert await close_code(sock) == 4401, (sub, via)
            r = await http.get("/users/evil/rooms", headers=auth(token=token))
            assert r.status_code == 401, r.text
            assert r.json()["error"]["code"] == "unauthorized"
            r = await http.post(
                "/rooms", json={"name": "x", "kind": "public"}, headers=auth(token=token)
            )
            assert r.status_code == 401, r.text
            async with httpx.AsyncClient(base_url=history.url, timeout=30) as hist:
                r = await hist.get("/rooms/clean/messages", headers=auth(token=token))
                assert r.status_code == 401, r.text

        # -- rooms API: user ids in paths, room bodies.
        bad_request(await http.get("/users/%00/rooms", headers=auth()))  # was a 500
        bad_request(await http.get("/users/a%00b/rooms", headers=auth()))
        bad_request(await http.put("/rooms/clean/members/b%00b", headers=auth("ann")))
        bad_request(await http.delete("/rooms/clean/members/b%00b", headers=auth("ann")))
        bad_request(await http.get("/rooms/cl%00ean", headers=auth()))
        for body in (
            {"name": f"N{NUL}", "kind": "public"},
            {"id": f"r{NUL}", "name": "n", "kind": "public"},
            {"name": "n", "kind": "public", "members": ["bob", f"b{NUL}"]},
            {"name": "n", "kind": "public", "owner": f"o{NUL}"},
        ):
            bad_request(await http.post("/rooms", json=body, headers=auth(token=service_token())))
        bad_request(
            await http.post(
                "/rooms",
                content=b'{"name": "\\ud800", "kind": "public"}',
                headers={**auth("ann"), "content-type": "application/json"},
            )
        )
        r = await http.get("/users/ann/rooms", headers=auth("ann"))
        assert r.status_code == 200 and r.json()["rooms"] == ["clean"]

    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
        bad_request(await http.get("/dev/token?user=a%00b"))  # the development login
        assert (await http.get("/dev/token?user=ann")).status_code == 200
    async with httpx.AsyncClient(base_url=history.url, timeout=30) as hist:
        bad_request(await hist.get("/rooms/cl%00ean/messages", headers=auth()))
        r = await hist.get(
            "/rooms/clean/messages", headers={"authorization": f"Bearer {make_token('ann')}"}
        )
        assert r.status_code == 200, r.text
    for proc in (rooms, history, gw):
        assert proc.running
        assert "Traceback" not in proc.log_path.read_text(errors="replace"), proc.name
