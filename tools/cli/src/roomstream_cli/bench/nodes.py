"""The node records (`NS:node:NODE`, fields `kind`, `pid`, `address`): which processes a bench
measures. One reader for `bench`, `bench publish`, `bench-connects`, `bench-idle` and
`bench-routing`."""

from __future__ import annotations

from typing import Any

from roomstream_kit.redis import AnyRedis, text

from ..common import stream_keys
from . import procstat


async def node_records(redis: AnyRedis, namespace: str) -> list[dict[bytes, bytes]]:
    """Every node record of `namespace` (the node index `NS:nodes`, then each hash)."""
    keys = stream_keys(namespace)
    nodes: Any = await redis.zrange(keys.nodes(), 0, -1)
    records: list[dict[bytes, bytes]] = []
    for node in nodes:
        record: Any = await redis.hgetall(keys.node(text(node)))
        records.append(record)
    return records


def live_pids_by_kind(records: list[dict[bytes, bytes]]) -> dict[str, list[int]]:
    """The pids of the records whose process is alive on this machine, by kind (sorted)."""
    found: dict[str, set[int]] = {}
    for record in records:
        pid = int(record.get(b"pid") or 0)
        if pid and procstat.alive(pid):
            found.setdefault(text(record.get(b"kind") or b"?"), set()).add(pid)
    return {kind: sorted(pids) for kind, pids in sorted(found.items())}
