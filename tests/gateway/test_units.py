"""The gateway's pure pieces: token bucket, handshake rules, frame bytes."""

from __future__ import annotations

from roomstream_gateway.auth import origin_allowed, token_from_request
from roomstream_gateway.hub import wire
from roomstream_gateway.ratelimit import TokenBucket
from websockets.datastructures import Headers
from websockets.frames import Frame
from websockets.streams import StreamReader


def test_token_bucket_burst_then_rate():
    bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.take(100.0)
    assert 0.49 < wait <= 0.5  # one token every 0.5 s
    assert bucket.take(100.5) == 0.0
    assert bucket.take(100.5) > 0
    assert [bucket.take(110.0) for _ in range(3)] == [0.0, 0.0, 0.0]  # refills to burst only
    assert bucket.take(110.0) > 0


def test_origin_allow_list():
    assert origin_allowed(None, ["http://a"])  # not a browser
    assert origin_allowed("http://x", [])  # empty list allows all
    assert origin_allowed("http://a/", ["http://a"])
    assert not origin_allowed("http://b", ["http://a"])


def test_token_sources_in_order():
    bearer = Headers([("Authorization", "Bearer T1")])
    assert token_from_request(bearer, "/ws?access_token=T2") == "T1"
    assert token_from_request(Headers(), "/ws?access_token=T2") == "T2"
    assert token_from_request(Headers(), "/ws") is None  # expect an auth frame
    assert token_from_request(Headers([("Authorization", "Basic xyz")]), "/ws") == ""
    assert token_from_request(Headers(), "/ws?access_token=") == ""


def test_wire_is_a_valid_unmasked_text_frame():
    payload, data = wire(b'{"type":"pong"}')
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    assert frame.data == payload and frame.fin and frame.opcode.name == "TEXT"
