"""Starting several service processes of one test at once (their imports overlap: on a busy
2-core machine each takes seconds), each with a generous readiness deadline."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tests.conftest import Cluster
from tests.support.processes import ServiceProcess, free_port


@dataclass
class Spec:
    module: str
    name: str
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    ready_path: str = "/readyz"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def start_together(
    cluster: Cluster, *specs: Spec, timeout_s: float = 120.0
) -> list[ServiceProcess]:
    """Start every process of `specs` in parallel; each is stopped with the cluster."""
    procs = []
    for spec in specs:
        proc = ServiceProcess(
            spec.module,
            {**cluster.env, **spec.env},
            spec.port,
            cluster.log_dir,
            name=spec.name,
            ready_path=spec.ready_path,
        )
        cluster.procs.append(proc)
        procs.append(proc)
    await asyncio.gather(*(asyncio.to_thread(p.start, timeout_s) for p in procs))
    return procs
