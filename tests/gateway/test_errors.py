"""Every error row and close code of the protocol, each while another client keeps being served."""

from __future__ import annotations

import httpx
import orjson
import pytest
from websockets.exceptions import InvalidStatus

from tests.conftest import make_token
from tests.gateway.helpers import (
    client,
    close_code,
    create_room,
    events_of,
    open_ws,
    recv,
    request,
)

GATEWAY = "roomstream_gateway"


async def _still_served(observer, talker, room: str, text: str) -> None:
    """The observer keeps receiving the room's messages."""
    ack = await request(talker, {"type": "send", "room": room, "text": text, "id": text})
    assert ack["type"] == "ack"
    (ev,) = await events_of(observer, room, 1)
    assert ev["data"]["text"] == text and ev["seq"] == ack["seq"]


async def test_command_errors(cluster, namespace, redis_client):
    await create_room(redis_client, namespace, "main", "olga", members=["bad"])
    await create_room(redis_client, namespace, "secret", "olga", kind="private")
    gw = cluster.start(GATEWAY, env={"ROOMSTREAM_MAX_TEXT_CHARS": "100"})
    observer, _ = await client(gw.ws_url, "olga")
    bad, _ = await client(gw.ws_url, "bad")

    async def error_for(raw: str) -> dict:
        await bad.send(raw)
        while True:
            frame = await recv(bad)
            if frame["type"] == "error":
                return frame

    cases = {
        "{not json": None,
        "[1, 2]": None,
        '{"type": "shout", "ref": "r1"}': "r1",
        '{"type": "send", "room": "main", "text": "x", "ref": "r2"}': "r2",  # missing id
        '{"type": "send", "room": "main", "text": 5, "id": "a", "ref": "r3"}': "r3",
        '{"type": "join", "room": "main", "since": "3", "ref": "r4"}': "r4",
        '{"type": "join", "room": "NOT A SLUG", "ref": "r5"}': "r5",
    }
    for i, (raw, ref) in enumerate(cases.items()):
        err = await error_for(raw)
        assert err["code"] == "bad_request", (raw, err)
        assert err.get("ref") == ref and err["message"]
        await _still_served(observer, observer, "main", f"after-{i}")

    too_long = await request(bad, {"type": "send", "room": "main", "text": "x" * 101, "id": "l"})
    assert too_long["code"] == "too_large"
    not_joined = await request(bad, {"type": "send", "room": "secret", "text": "hi", "id": "n"})
    assert not_joined["code"] == "forbidden"
    missing = await request(bad, {"type": "join", "room": "nowhere"})
    assert missing["code"] == "not_found"
    private = await request(bad, {"type": "join", "room": "secret"})
    assert private["code"] == "forbidden"
    history = await request(bad, {"type": "history", "room": "secret"})
    assert history["code"] == "forbidden"
    # The bad client's connection is still usable.
    assert (await request(bad, {"type": "ping"}))["type"] == "pong"
    await _still_served(observer, bad, "main", "still-fine")

    # A frame over the limit closes the socket with 1009; others are unaffected.
    await bad.send(orjson.dumps({"type": "ping", "pad": "x" * (70 * 1024)}).decode())
    assert await close_code(bad) == 1009
    await _still_served(observer, observer, "main", "after-1009")
    await observer.close()


@pytest.mark.parametrize("via", ["header", "query", "frame"])
async def test_bad_tokens_close_4401(cluster, namespace, redis_client, via):
    await create_room(redis_client, namespace, "main", "olga")
    gw = cluster.start(GATEWAY)
    observer, _ = await client(gw.ws_url, "olga")
    for token in (
        "not-a-jwt",
        make_token("eve", ttl_s=-60),  # expired
        make_token("eve").rsplit(".", 1)[0] + ".c2lnbmF0dXJl",  # wrong signature
        "",  # empty
    ):
        ws = await open_ws(gw.ws_url, token=token, via=via)
        assert await close_code(ws) == 4401, token
    # A good token by the same route works.
    ok = await open_ws(gw.ws_url, "olga", via=via)
    assert (await recv(ok))["type"] == "welcome"
    await _still_served(observer, ok, "main", f"ok-{via}")
    await ok.close()
    await observer.close()


async def test_auth_timeout_origin_and_http_routes(cluster, namespace, redis_client):
    await create_room(redis_client, namespace, "main", "olga")
    gw = cluster.start(
        GATEWAY,
        env={
            "ROOMSTREAM_AUTH_TIMEOUT_S": "1",
            "ROOMSTREAM_ALLOWED_ORIGINS": "http://good.example, http://localhost:8000",
        },
    )
    observer, _ = await client(gw.ws_url, "olga")
    # No token and no auth frame: 4408.
    silent = await open_ws(gw.ws_url, via="none")
    assert await close_code(silent) == 4408
    # A first frame that is not an auth frame: 4401.
    wrong = await open_ws(gw.ws_url, via="none")
    await wrong.send('{"type": "ping"}')
    assert await close_code(wrong) == 4401

    # Origin outside the allow-list: HTTP 403 at the upgrade.
    with pytest.raises(InvalidStatus) as refused:
        await open_ws(gw.ws_url, "olga", origin="http://evil.example")
    assert refused.value.response.status_code == 403
    allowed = await open_ws(gw.ws_url, "olga", origin="http://good.example")
    assert (await recv(allowed))["type"] == "welcome"
    await _still_served(observer, allowed, "main", "origin-ok")

    async with httpx.AsyncClient(base_url=gw.url) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        metrics = await http.get("/metrics")
        assert metrics.status_code == 200
        assert "roomstream_gateway_auth_failures_total" in metrics.text
        assert "roomstream_gateway_connections" in metrics.text
        page = await http.get("/")
        assert page.status_code == 200 and "<html" in page.text
        nope = await http.get("/nope")
        assert nope.status_code == 404 and nope.json()["error"]["code"] == "not_found"
        # Development login is off unless ROOMSTREAM_DEV_LOGIN=1.
        assert (await http.get("/dev/token?user=x")).status_code == 404
    await allowed.close()
    await observer.close()


async def test_dev_login(cluster, namespace):
    gw = cluster.start(GATEWAY, env={"ROOMSTREAM_DEV_LOGIN": "1"})
    async with httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.get("/dev/token", params={"user": "zoe"})
        assert r.status_code == 200
        bad = await http.get("/dev/token")
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
    ws = await open_ws(gw.ws_url, token=r.json()["token"], via="frame")
    welcome = await recv(ws)
    assert welcome["type"] == "welcome" and welcome["user"] == "zoe"
    await ws.close()
