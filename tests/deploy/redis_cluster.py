"""A real 3-master Redis Cluster made of local `redis-server` processes, for tests.

Each node runs with `--cluster-enabled yes` on a free port in its own folder under a temp dir;
`redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes` assigns the 16384 slots.
Nothing is persisted (`--save ""`, no AOF): the cluster lives only as long as the test.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from redis import Redis
from redis.cluster import RedisCluster


def _ping(port: int) -> bool:
    return bool(Redis(host="127.0.0.1", port=port, socket_timeout=1).ping())


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too; both must stay below 65536."""
    for _ in range(200):
        port = random.randint(20_000, 55_000)
        try:
            for p in (port, port + 10_000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


@dataclass
class RedisClusterProcesses:
    """Start with `start()`, stop with `stop()`; `url` names one node (any node will do)."""

    base_dir: Path
    masters: int = 3
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self, timeout: float = 60.0) -> RedisClusterProcesses:
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> RedisClusterProcesses:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise RuntimeError("redis-server and redis-cli must be on PATH")
        self.ports = []
        while len(self.ports) < self.masters:
            port = free_cluster_port()
            if port not in self.ports:
                self.ports.append(port)
        for port in self.ports:
            node_dir = self.base_dir / f"redis-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            log = open(node_dir / "redis.log", "ab")  # noqa: SIM115 - handed to the child
            self.procs.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--dir",
                        str(node_dir),
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "5000",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--protected-mode",
                        "no",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        deadline = time.monotonic() + timeout
        for port in self.ports:
            self._wait(partial(_ping, port), deadline)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        self._wait(self._healthy, deadline)
        return self

    def _healthy(self) -> bool:
        for port in self.ports:
            info = Redis(
                host="127.0.0.1", port=port, socket_timeout=1, decode_responses=True
            ).execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
            if info.get("cluster_state") != "ok":
                return False
        client = RedisCluster(host="127.0.0.1", port=self.ports[0])
        try:
            primaries = client.get_primaries()  # type: ignore[no-untyped-call]
            return len(primaries) == self.masters
        finally:
            client.close()

    @staticmethod
    def _wait(check: Callable[[], object], deadline: float) -> None:
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except Exception as exc:  # not up yet
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"Redis Cluster not ready: {last}")

    def slot_owner(self) -> dict[int, int]:
        """Port of the master owning each of the 16384 slots."""
        owners: dict[int, int] = {}
        admin = Redis(host="127.0.0.1", port=self.ports[0])
        slots = admin.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
        for start, end, *nodes in slots:
            port = int(nodes[0][1])
            for slot in range(int(start), int(end) + 1):
                owners[slot] = port
        return owners

    def node_id(self, port: int) -> str:
        admin = Redis(host="127.0.0.1", port=port, socket_timeout=5, decode_responses=True)
        try:
            return str(admin.execute_command("CLUSTER MYID"))  # type: ignore[no-untyped-call]
        finally:
            admin.close()

    def migrate_slot(
        self,
        slot: int,
        target: int,
        *,
        batch: int = 10,
        pause_s: float = 0.0,
        finalize: Iterable[int] | None = None,
        finalize_pause_s: float = 0.0,
    ) -> int:
        """Move `slot` with every key in it to the master on port `target`, the way
        `redis-cli --cluster reshard` does: IMPORTING on the target, MIGRATING on the source,
        `MIGRATE ... KEYS` in batches of `batch` (`pause_s` between batches, so clients meet the
        ASK / TRYAGAIN window), then `SETSLOT NODE` on every master — in the order `finalize`
        (default: target, source, the others), `finalize_pause_s` after each. Returns how many
        keys moved. Synchronous: run it in a thread next to an event loop."""
        source = self.slot_owner()[slot]
        if source == target:
            raise ValueError(f"slot {slot} already lives on {target}")
        ids = {port: self.node_id(port) for port in self.ports}
        admin = {port: Redis(host="127.0.0.1", port=port, socket_timeout=10) for port in self.ports}
        try:
            admin[target].execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[source])  # type: ignore[no-untyped-call]
            admin[source].execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[target])  # type: ignore[no-untyped-call]
            moved = 0
            while keys := admin[source].execute_command("CLUSTER GETKEYSINSLOT", slot, batch):  # type: ignore[no-untyped-call]
                admin[source].execute_command(  # type: ignore[no-untyped-call]
                    "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys
                )
                moved += len(keys)
                if pause_s:
                    time.sleep(pause_s)
            order = list(finalize) if finalize is not None else [target, source]
            order += [p for p in self.ports if p not in order]
            for port in order:
                admin[port].execute_command("CLUSTER SETSLOT", slot, "NODE", ids[target])  # type: ignore[no-untyped-call]
                if finalize_pause_s:
                    time.sleep(finalize_pause_s)
            return moved
        finally:
            for redis in admin.values():
                redis.close()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()
