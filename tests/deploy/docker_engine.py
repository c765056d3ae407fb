"""A Docker engine of the test's own: Debian's `dockerd` on a private socket, stopped afterwards.

`dockerd` runs with `--bridge=none --iptables=false --ip6tables=false` (no bridge, no firewall
rules: every container the compose test starts uses the host network and talks to 127.0.0.1 only),
its own exec-root, pidfile, socket and containerd namespace under a short folder in /tmp (unix
socket paths are limited to 108 bytes), and a data-root that may be kept between runs (the image
cache: see `tests/deploy/compose_images.py`). Nothing is shared with a system Docker, if any.

`EngineUnavailable` means `dockerd` is installed but cannot run on this machine (no privileges,
no overlay/cgroups...): the one reason the compose test skips.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class EngineUnavailable(RuntimeError):
    """`dockerd` did not start here (the message says why)."""


def docker_binaries() -> tuple[str, str]:
    """(`dockerd`, `docker`) paths; Debian's client first, the one matching its engine."""
    dockerd = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/usr/bin")
    docker = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else shutil.which("docker")
    missing = [name for name, path in (("dockerd", dockerd), ("docker", docker)) if not path]
    assert not missing, (
        f"{', '.join(missing)} not installed: scripts/ensure-services.sh installs Debian's docker.io"
    )
    assert dockerd and docker
    return dockerd, docker


@dataclass
class DockerEngine:
    data_root: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    run_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.dockerd, self.docker_bin = docker_binaries()
        self.run_dir = Path(tempfile.mkdtemp(prefix="rs-dockerd-", dir="/tmp"))

    @property
    def host(self) -> str:
        return f"unix://{self.run_dir / 'docker.sock'}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for `docker` / `docker-compose` against this engine (legacy builder: the
        engine has no BuildKit frontend image to pull, and Debian's client has no buildx)."""
        return {
            **os.environ,
            "DOCKER_HOST": self.host,
            "DOCKER_BUILDKIT": "0",
            "COMPOSE_DOCKER_CLI_BUILD": "0",
        }

    def start(self, timeout: float = 60.0) -> DockerEngine:
        self.data_root.mkdir(parents=True, exist_ok=True)
        namespace = f"roomstream-test-{os.getpid()}"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                self.dockerd,
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                f"--data-root={self.data_root}",
                f"--exec-root={self.run_dir / 'exec'}",
                f"--pidfile={self.run_dir / 'dockerd.pid'}",
                f"--host={self.host}",
                f"--containerd-namespace={namespace}",
                f"--containerd-plugins-namespace={namespace}-plugins",
                "--log-level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its containerd and shims share this group: stop() ends them
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineUnavailable(
                    f"dockerd exited ({self.proc.returncode}): {self.log_tail()}"
                )
            done = self.run("version", "--format", "{{.Server.Version}}", check=False, timeout=10)
            if done.returncode == 0:
                return self
            time.sleep(0.3)
        self.stop()
        raise EngineUnavailable(f"dockerd did not answer within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120.0,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`docker ARGS` against this engine; raises with its output when `check` and it failed."""
        done = subprocess.run(
            [self.docker_bin, *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            timeout=timeout,
            input=input,
        )
        result = subprocess.CompletedProcess(
            done.args,
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr}{result.stdout}")
        return result

    def remove_all_containers(self) -> None:
        """Leftovers of an earlier run that died before its teardown (a kept data-root)."""
        ids = self.run("ps", "-aq").stdout.split()
        if ids:
            self.run("rm", "-f", "-v", *ids, timeout=120)
        self.run("volume", "prune", "-f", timeout=60)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (dockerd stops its containers and containerd), SIGKILL to the group if stuck."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # dockerd and the containerd it started
                proc.wait(10)
        self._unmount_under(self.run_dir)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    @staticmethod
    def _unmount_under(root: Path) -> None:
        """What dockerd left mounted in its exec-root (its network namespace file)."""
        with open("/proc/mounts") as mounts:
            points = [line.split()[1] for line in mounts]
        for point in sorted((p for p in points if p.startswith(f"{root}/")), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
