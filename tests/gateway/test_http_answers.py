"""Requests the WebSocket handshake cannot take get an HTTP answer, never a silent drop (405 for a
method other than GET, with or without a body; 400 for a GET with a body; 426 for a GET /ws
without upgrade), and invalid UTF-8 in a text frame closes with 1007 — each while the gateway
keeps serving its sockets."""

from __future__ import annotations

import asyncio

import orjson

from tests.gateway.helpers import client, close_code, request

GATEWAY = "roomstream_gateway"


async def _raw_http(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(4096), 10)
    writer.close()
    return data


def _status(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1.1 "), reply[:80]
    return int(reply.split(b" ", 2)[1])


async def test_non_get_and_bodies_get_an_http_answer(cluster, namespace):
    gw = cluster.start(GATEWAY)
    observer, _ = await client(gw.ws_url, "olga")
    cases = [
        (b'POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n{"a":1}', 405),
        (
            b"POST /ws HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            405,
        ),
        (b"POST /ws HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"PUT /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx", 405),
        (b"GET /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 400),
        (b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 426),
    ]
    for raw, status in cases:
        reply = await _raw_http(gw.port, raw)
        assert _status(reply) == status, (raw, reply[:200])
        if status == 405:
            assert b"\r\nAllow: GET\r\n" in reply
        if b"Content-Length: " in raw or b"chunked" in raw:  # answered by the gateway's parser
            body = orjson.loads(reply.split(b"\r\n\r\n", 1)[1])
            assert body["error"]["code"] == "bad_request"
    assert (await request(observer, {"type": "ping"}))["type"] == "pong"
    await observer.close()


async def test_invalid_utf8_in_a_text_frame_closes_1007(cluster, namespace):
    gw = cluster.start(GATEWAY)
    observer, _ = await client(gw.ws_url, "olga")
    bad, _ = await client(gw.ws_url, "mallory")
    await bad.send(b'{"type":"ping","x":"\xff\xfe"}', text=True)
    assert await close_code(bad, 10) == 1007
    assert (await request(observer, {"type": "ping"}))["type"] == "pong"
    await observer.close()
