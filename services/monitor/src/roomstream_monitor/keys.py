"""Redis keys of the monitor's own (next to the shared key map of `roomstream_contracts.streams`).

| key | type | what |
|---|---|---|
| `NS:monitor:rate:SECOND` | hash, TTL | room → `message` events in that second (`*` = all rooms) |
| `NS:monitor:rate-version` | string | incremented with every change of the buckets: the collector re-reads them only when it moved |
| `NS:nodes-failed` | zset | node → ms when it was declared dead (kept `failed_keep_s`) |
"""

from __future__ import annotations


def rate_bucket(namespace: str, second: int) -> str:
    return f"{namespace}:monitor:rate:{second}"


def rate_version(namespace: str) -> str:
    return f"{namespace}:monitor:rate-version"


def nodes_failed(namespace: str) -> str:
    return f"{namespace}:nodes-failed"
