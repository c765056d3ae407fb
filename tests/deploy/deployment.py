"""A local deployment for the end-to-end deployment tests: real service processes (through the
`cluster` fixture of tests/conftest.py) and, where asked, the repo's HAProxy in front of the
gateways."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.conftest import Cluster
from tests.deploy.lb import HAPROXY_CFG, HAProxyProcess, render_haproxy
from tests.support.processes import ServiceProcess, free_port


@dataclass
class Deployment:
    rooms: ServiceProcess
    history: ServiceProcess
    gateways: list[ServiceProcess]
    lb: HAProxyProcess | None = None
    monitor: ServiceProcess | None = None

    @property
    def gateway_urls(self) -> list[str]:
        return [g.ws_url for g in self.gateways]

    def stop_lb(self) -> None:
        if self.lb is not None:
            self.lb.stop()


def start_deployment(
    cluster: Cluster,
    work_dir: Path,
    *,
    gateways: int = 2,
    env: dict[str, str] | None = None,
    with_lb: bool = False,
    with_monitor: bool = False,
) -> Deployment:
    """rooms + history + N gateways (node ids gateway-1..N), optionally behind HAProxy, and
    optionally the monitor."""
    env = dict(env or {})
    rooms_port, history_port = free_port(), free_port()
    env["ROOMSTREAM_ROOMS_URL"] = f"http://127.0.0.1:{rooms_port}"
    env["ROOMSTREAM_HISTORY_URL"] = f"http://127.0.0.1:{history_port}"
    rooms = cluster.start(
        "roomstream_rooms", port=rooms_port, env={**env, "ROOMSTREAM_NODE_ID": "rooms-1"}
    )
    history = cluster.start(
        "roomstream_history", port=history_port, env={**env, "ROOMSTREAM_NODE_ID": "history-1"}
    )
    gws = [
        cluster.start(
            "roomstream_gateway",
            env={**env, "ROOMSTREAM_NODE_ID": f"gateway-{i}"},
            name=f"gateway-{i}",
        )
        for i in range(1, gateways + 1)
    ]
    deployment = Deployment(rooms, history, gws)
    if with_monitor:
        deployment.monitor = cluster.start(
            "roomstream_monitor", env={**env, "ROOMSTREAM_NODE_ID": "monitor-1"}
        )
    if with_lb:
        port = free_port()
        config = render_haproxy(
            HAPROXY_CFG.read_text(), f"127.0.0.1:{port}", [f"127.0.0.1:{g.port}" for g in gws]
        )
        deployment.lb = HAProxyProcess(config, work_dir / "haproxy", port).start()
    return deployment
