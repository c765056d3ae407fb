"""What `roomstream up` starts, on which ports, with which environment (pure logic)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    """Unique name: log file, node id (`gateway-1`, `rooms-1`, …)."""
    module: str
    """`python -m MODULE`."""
    port: int
    kind: str
    """`gateway`, `rooms`, `history`, `monitor`, `hooks`."""
    required: bool
    """Without it the system cannot work: `up` fails if it does not come up."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True, slots=True)
class Ports:
    gateways: list[int]
    rooms: int
    history: int
    monitor: int
    hooks: int = 8400

    @classmethod
    def from_base(cls, base: int, gateways: int) -> Ports:
        """Gateways at BASE, BASE+1, …; rooms BASE+100, history BASE+200, monitor BASE+300,
        hooks BASE+400."""
        return cls(
            [base + i for i in range(gateways)], base + 100, base + 200, base + 300, base + 400
        )


@dataclass(slots=True)
class Plan:
    ports: Ports
    host: str = "127.0.0.1"
    services: list[ServiceSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        p = self.ports
        # The services gateways call (rooms, history) start first.
        self.services = [
            ServiceSpec("rooms-1", "roomstream_rooms", p.rooms, "rooms", False),
            ServiceSpec("history-1", "roomstream_history", p.history, "history", False),
            ServiceSpec("monitor-1", "roomstream_monitor", p.monitor, "monitor", False),
            ServiceSpec("hooks-1", "roomstream_hooks", p.hooks, "hooks", False),
        ] + [
            ServiceSpec(f"gateway-{i + 1}", "roomstream_gateway", port, "gateway", True)
            for i, port in enumerate(p.gateways)
        ]

    def by_kind(self, kind: str) -> list[ServiceSpec]:
        return [s for s in self.services if s.kind == kind]

    def allowed_origins(self) -> str:
        """Only the origins of our own pages: every gateway's chat page and the dashboard."""
        ports = [*self.ports.gateways, self.ports.monitor]
        return ",".join(f"http://{h}:{port}" for port in ports for h in ("localhost", "127.0.0.1"))

    def env(
        self,
        spec: ServiceSpec,
        *,
        redis_url: str,
        database_url: str,
        namespace: str,
        jwt_secret: str,
    ) -> dict[str, str]:
        """The environment of one child process."""
        return {
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "ROOMSTREAM_HOST": self.host,
            "ROOMSTREAM_PORT": str(spec.port),
            "ROOMSTREAM_NAMESPACE": namespace,
            "ROOMSTREAM_JWT_SECRET": jwt_secret,
            "ROOMSTREAM_NODE_ID": spec.name,
            "ROOMSTREAM_ALLOWED_ORIGINS": self.allowed_origins(),
            "ROOMSTREAM_DEV_LOGIN": "1",
            # Marks the development runner: only its children may use the development secret.
            "ROOMSTREAM_DEV_MODE": "1",
            "ROOMSTREAM_ROOMS_URL": f"http://127.0.0.1:{self.ports.rooms}",
            "ROOMSTREAM_HISTORY_URL": f"http://127.0.0.1:{self.ports.history}",
        }


def port_taken(host: str, port: int) -> bool:
    """Whether something listens on (host, port) already (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def taken_ports(host: str, named_ports: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The (name, port) pairs whose port is in use, or repeated in the list."""
    seen: set[int] = set()
    taken = []
    for name, port in named_ports:
        if port in seen or port_taken(host, port):
            taken.append((name, port))
        seen.add(port)
    return taken
