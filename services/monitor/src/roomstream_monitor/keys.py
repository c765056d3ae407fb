"""Redis keys of the monitor's own (next to the shared key map of `roomstream_contracts.streams`).

| key | type | what |
|---|---|---|
| `NS:monitor:rate:SECOND` | hash, TTL | room → `message` events in that second (`*` = all rooms) |
| `NS:nodes-failed` | zset | node → ms when it was declared dead (kept `failed_keep_s`) |
"""

from __future__ import annotations


def rate_bucket(namespace: str, second: int) -> str:
    return f"{namespace}:monitor:rate:{second}"


def nodes_failed(namespace: str) -> str:
    return f"{namespace}:nodes-failed"
