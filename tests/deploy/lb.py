"""The repo's load balancer (deploy/haproxy.cfg) for real, with only its addresses changed.

`render_haproxy` swaps the frontend's `bind` and the backend's `server` lines for local
addresses and leaves every other line as it is; `HAProxyProcess` runs Debian's `haproxy` binary on
the result as a non-daemon child (`-db`) with its own folder, and stops it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"

_BIND = re.compile(r"^(\s*)bind\s+\S+(.*)$")
_SERVER = re.compile(r"^(\s*)server\s+(\S+)\s+(\S+)(.*)$")


def address_lines(config: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The `bind` addresses and the `(name, address)` of each `server` line."""
    binds, servers = [], []
    for line in config.splitlines():
        if m := _BIND.match(line):
            binds.append(line.split()[1])
        elif m := _SERVER.match(line):
            servers.append((m.group(2), m.group(3)))
    return binds, servers


def render_haproxy(config: str, listen: str, gateways: list[str]) -> str:
    """`config` listening on `listen` in front of `gateways` (host:port); all else unchanged."""
    out: list[str] = []
    servers_done = False
    for line in config.splitlines():
        if m := _BIND.match(line):
            out.append(f"{m.group(1)}bind {listen}{m.group(2)}")
        elif m := _SERVER.match(line):
            if not servers_done:  # the block of server lines becomes one line per gateway
                out.extend(
                    f"{m.group(1)}server gateway-{i} {addr}{m.group(4)}"
                    for i, addr in enumerate(gateways, 1)
                )
                servers_done = True
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def strip_addresses(config: str) -> list[str]:
    """Every line except `bind` and `server` lines (what rendering must leave identical)."""
    return [ln for ln in config.splitlines() if not (_BIND.match(ln) or _SERVER.match(ln))]


@dataclass
class HAProxyProcess:
    config: str
    work_dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "haproxy.log"

    def start(self, timeout: float = 30.0) -> HAProxyProcess:
        binary = shutil.which("haproxy")
        if binary is None:
            raise RuntimeError("haproxy is not installed (scripts/ensure-services.sh installs it)")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.work_dir / "haproxy.cfg"
        cfg.write_text(self.config)
        check = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejects the config:\n{check.stdout}{check.stderr}")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [binary, "-db", "-f", str(cfg), "-p", str(self.work_dir / "haproxy.pid")],
            cwd=self.work_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited: {self.log_path.read_text()}")
            try:
                r = httpx.get(f"http://127.0.0.1:{self.port}/lb/healthz", timeout=1.0)
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError("haproxy did not come up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
