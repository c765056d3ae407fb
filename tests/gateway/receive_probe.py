"""CPU per event of the gateway's receive path before delivery, in process: a pub/sub message of
a room channel (routed delivery: hiredis parse + `routing.parse_note` + the entry dict) against an
XREAD entry of the tail (hiredis parse + the field dict), fed in 64 KB chunks as a socket read
delivers them. Prints µs per event for each, twice, interleaved.

    uv run --frozen --no-sync python -m tests.gateway.receive_probe
"""

from __future__ import annotations

import time

import hiredis
import orjson
from roomstream_gateway.routing import parse_note

N = 20_000
CHUNK = 65_536
BODY = orjson.dumps(
    {
        "seq": 1,
        "id": "01J0000000000000000000000",
        "kind": "message",
        "room": "bench-1",
        "user": "bench-u1",
        "ts": 1733000000000,
        "data": {"text": "b|1733000000.123|1", "client_id": "abc"},
    }
)


def _resp(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


PUB = b"".join(
    _resp(b"smessage", b"rs:recent:{3}:bench-1", b"message %d " % i + BODY) for i in range(N)
)
XREAD = b"*1\r\n*2\r\n$10\r\nrs:log:{3}\r\n*%d\r\n" % N + b"".join(
    b"*2\r\n" + _resp(b"%d-0" % n)[4:] + _resp(b"r", b"bench-1", b"k", b"message", b"e", BODY)
    for n in range(N)
)


def routed() -> int:
    reader, out = hiredis.Reader(), []
    for i in range(0, len(PUB), CHUNK):
        reader.feed(PUB[i : i + CHUNK])
        while (reply := reader.gets()) is not False:
            kind, _, body = parse_note(reply[2])
            out.append({b"r": b"bench-1", b"k": kind, b"e": body})
    return len(out)


def tail() -> int:
    reader, out = hiredis.Reader(), []
    for i in range(0, len(XREAD), CHUNK):
        reader.feed(XREAD[i : i + CHUNK])
        reply = reader.gets()
    for _, items in reply:
        for _, fields in items:
            out.append(dict(zip(fields[::2], fields[1::2], strict=True)))
    return len(out)


def main() -> None:
    for probe in (routed, tail, routed, tail):
        start = time.process_time()
        for _ in range(5):
            assert probe() == N
        per = (time.process_time() - start) / (5 * N) * 1e6
        print(f"{probe.__name__}: {per:.2f} µs per event")


if __name__ == "__main__":
    main()
