"""The images of the compose test, built here with no image registry.

- the base: Debian bookworm by `debootstrap --variant=minbase` from the machine's own Debian mirror
  (read from its apt sources), packed into a tarball and `docker import`ed;
- stand-ins for the official images compose.yaml names (python, redis, postgres, haproxy), built
  from Debian's packages on that base (tests/deploy/images/NAME/Dockerfile);
- `roomstream:latest` from the repo's Dockerfile with `--build-arg PYTHON_IMAGE=` the python
  stand-in (production builds keep the official python image, the ARG's default).

Cache (`ROOMSTREAM_COMPOSE_CACHE`, default ~/.cache/roomstream/compose): the rootfs tarball and the
engine's data-root (so its images and build layers) are kept; a second run rebuilds only what
changed. A run that finds the cache locked by another run uses a private data-root instead.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.deploy.docker_engine import DockerEngine

REPO = Path(__file__).resolve().parents[2]
IMAGES = Path(__file__).resolve().parent / "images"
SUITE = "bookworm"
BASE_IMAGE = f"roomstream-test/debian:{SUITE}"
STAND_INS = {
    name: f"roomstream-test/{name}:{SUITE}" for name in ("python", "redis", "postgres", "haproxy")
}
ROOMSTREAM_IMAGE = "roomstream:latest"  # the name compose.yaml gives the roomstream services
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "roomstream/compose"
    return Path(os.environ.get("ROOMSTREAM_COMPOSE_CACHE", default))


@contextmanager
def data_root(scratch: Path) -> Iterator[Path]:
    """The kept data-root when this run can lock the cache, else a private one in `scratch`."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            private = scratch / "docker-data"
            try:
                yield private
            finally:
                shutil.rmtree(private, ignore_errors=True)
            return
        yield cache / "docker-data"


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses (`ROOMSTREAM_DEBIAN_MIRROR` overrides)."""
    if mirror := os.environ.get("ROOMSTREAM_DEBIAN_MIRROR"):
        return mirror
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:  # deb822 stanzas
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(
                re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE),
            )
            suites = fields.get("Suites", "").split()
            if "deb" in fields.get("Types", "").split() and SUITE in suites:
                return str(fields["URIs"].split()[0])
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.list")]:
        if path.is_file():
            for line in path.read_text().splitlines():
                m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)\s", line)
                if m and m.group(2) == SUITE:
                    return m.group(1)
    raise AssertionError(f"no Debian {SUITE} mirror in apt's sources: set ROOMSTREAM_DEBIAN_MIRROR")


def base_tarball(work: Path) -> Path:
    """The minbase rootfs as a tarball, debootstrapped once and kept in the cache."""
    tarball = cache_dir() / f"debian-{SUITE}-minbase.tar"
    if tarball.is_file():
        return tarball
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin")
    assert debootstrap, "debootstrap is not installed (scripts/ensure-services.sh installs it)"
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=work))
    try:
        done = subprocess.run(
            [debootstrap, "--variant=minbase", SUITE, str(rootfs), debian_mirror()],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, f"debootstrap failed: {done.stdout[-3000:]}{done.stderr}"
        # Package files and lists are only a download cache: the images run `apt-get update`.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / leftover).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = tarball.with_suffix(".tar.partial")
        subprocess.run(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."],
            check=True,
            timeout=300,
        )
        partial.rename(tarball)  # whole or absent: a run cut short leaves no broken cache
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return tarball


def has_image(engine: DockerEngine, name: str) -> bool:
    return engine.run("image", "inspect", name, check=False).returncode == 0


def ensure_base_image(engine: DockerEngine, work: Path) -> None:
    if has_image(engine, BASE_IMAGE):
        return
    tarball = base_tarball(work)
    engine.run("import", str(tarball), BASE_IMAGE, timeout=300)


def build(engine: DockerEngine, context: Path, tag: str, *build_args: str) -> None:
    """`docker build` (legacy builder, host network: apt and pip reach their registries)."""
    args = [a for kv in build_args for a in ("--build-arg", kv)]
    log = engine.run(
        "build", "--network", "host", "--force-rm", *args, "-t", tag, str(context), timeout=1200
    )
    del log


def build_stand_ins(engine: DockerEngine, work: Path) -> None:
    for name, tag in STAND_INS.items():
        context = IMAGES / name
        if name == "python":  # the machine's extra CAs (a TLS-inspecting proxy's, say)
            context = work / "python-context"
            shutil.copytree(IMAGES / name, context, dirs_exist_ok=True)
            certs = context / "ca-certificates"
            certs.mkdir(exist_ok=True)
            for crt in sorted(EXTRA_CA_DIR.glob("*.crt")) if EXTRA_CA_DIR.is_dir() else []:
                shutil.copy2(crt, certs / crt.name)
        build(engine, context, tag, f"BASE_IMAGE={BASE_IMAGE}")


def build_roomstream(engine: DockerEngine) -> None:
    build(engine, REPO, ROOMSTREAM_IMAGE, f"PYTHON_IMAGE={STAND_INS['python']}")


def build_all(engine: DockerEngine, work: Path) -> dict[str, float]:
    """Every image the test needs; seconds per step (what docs/operations.md records)."""
    times: dict[str, float] = {}
    t = time.monotonic()
    ensure_base_image(engine, work)
    times["base image"] = time.monotonic() - t
    t = time.monotonic()
    build_stand_ins(engine, work)
    times["python/redis/postgres/haproxy images"] = time.monotonic() - t
    t = time.monotonic()
    build_roomstream(engine)
    times["roomstream image"] = time.monotonic() - t
    # Old roomstream builds (untagged once retagged) beyond a day: the kept cache stays bounded.
    engine.run("image", "prune", "-f", "--filter", "until=24h", check=False)
    return times
