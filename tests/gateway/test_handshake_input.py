"""Malformed handshakes get a clear refusal, never a 500 or an unhandled error, and the gateway
keeps serving everyone else."""

from __future__ import annotations

import asyncio

from tests.conftest import make_token
from tests.gateway.helpers import client, close_code, create_room, events_of, request

GATEWAY = "roomstream_gateway"


async def _raw_http(port: int, head: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(4096), 10)
    writer.close()
    return data


def _upgrade(path: str, *extra: str) -> str:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return "\r\n".join(lines) + "\r\n\r\n"


async def test_malformed_handshakes_are_refused_cleanly(cluster, namespace, redis_client):
    await create_room(redis_client, namespace, "main", "olga")
    gw = cluster.start(GATEWAY, env={"ROOMSTREAM_ALLOWED_ORIGINS": "http://ok.example"})
    observer, _ = await client(gw.ws_url, "olga")

    # An unparsable request target: 400, not 500.
    reply = await _raw_http(gw.port, _upgrade("//[/ws"))
    assert reply.startswith(b"HTTP/1.1 400"), reply[:80]
    # A repeated Origin header is ambiguous: 400.
    reply = await _raw_http(
        gw.port, _upgrade("/ws", "Origin: http://ok.example", "Origin: http://evil.example")
    )
    assert reply.startswith(b"HTTP/1.1 400"), reply[:80]

    # A repeated Authorization header: the socket opens and is closed with 4401, not 1011.
    from websockets.asyncio.client import connect

    token = make_token("mallory")
    ws = await connect(
        gw.ws_url,
        additional_headers=[("Authorization", f"Bearer {token}"), ("Authorization", "Bearer x")],
    )
    assert await close_code(ws) == 4401

    # Everyone else is still served.
    ack = await request(observer, {"type": "send", "room": "main", "text": "still", "id": "s1"})
    assert ack["type"] == "ack"
    (ev,) = await events_of(observer, "main", 1)
    assert ev["data"]["text"] == "still"
