"""The Dockerfile's builder stage, run for real without a Docker engine.

Its `COPY` and `RUN uv sync` lines are replayed in a scratch folder with its `ENV` (the venv goes
to a temp dir instead of /opt/venv); then, from outside the repo, the venv must have every
service's entry point and import every service (non-editable: no path back to the sources),
including the package data the services serve (the chat page, the dashboard, the migrations).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def builder_steps() -> tuple[dict[str, str], list[tuple[str, list[str]]]]:
    """ENV of the builder stage and its COPY / RUN steps, in order (continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stage = text.split("AS builder", 1)[1].split("\nFROM ", 1)[0]
    env: dict[str, str] = {}
    steps: list[tuple[str, list[str]]] = []
    for line in stage.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "ENV":
            env.update(w.split("=", 1) for w in words[1:])  # type: ignore[misc]
        elif words[0] in ("COPY", "RUN"):
            steps.append((words[0], words[1:]))
    return env, steps


def _copy(origin: Path, workdir: Path, dest: str) -> None:
    """`COPY origin dest` with Docker's meaning (relative to the WORKDIR)."""
    into = workdir / dest
    if origin.is_dir():
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(origin, into, dirs_exist_ok=True, ignore=ignore)
    elif dest.endswith("/") or dest == ".":
        into.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, into / origin.name)
    else:
        into.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, into)


def test_builder_stage_installs_every_service(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    assert uv, "uv is needed (./dev installs it)"
    env, steps = builder_steps()
    venv = tmp_path / "venv"
    src = tmp_path / "src"
    src.mkdir()
    run_env = {**os.environ, **env, "UV_PROJECT_ENVIRONMENT": str(venv)}
    run_env.pop("VIRTUAL_ENV", None)
    ran_sync = 0
    for kind, args in steps:
        if kind == "COPY":
            *sources, dest = args
            for source in sources:
                _copy(REPO / source, src, dest)
        elif args[:2] == ["uv", "sync"]:
            done = subprocess.run(
                [uv, *args[1:]], cwd=src, env=run_env, capture_output=True, text=True, timeout=600
            )
            assert done.returncode == 0, done.stderr
            ran_sync += 1
    assert ran_sync == 2
    shutil.rmtree(src)  # the runtime stage gets the venv only

    for script in (
        "roomstream-gateway",
        "roomstream-rooms",
        "roomstream-history",
        "roomstream-monitor",
        "roomstream",
    ):
        assert (venv / "bin" / script).exists(), script
    probe = (
        "import importlib.resources as r, roomstream_gateway.app, roomstream_rooms.app, "
        "roomstream_history.app, roomstream_monitor.app, roomstream_cli.__main__\n"
        "assert r.files('roomstream_gateway').joinpath('static/index.html').is_file()\n"
        "assert r.files('roomstream_monitor').joinpath('static/index.html').is_file()\n"
        "for p in ('roomstream_rooms', 'roomstream_history'):\n"
        "    assert any(f.name.endswith('.sql') for f in r.files(p + '.migrations').iterdir())\n"
        "import roomstream_gateway; print(roomstream_gateway.__file__)"
    )
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert str(venv) in done.stdout and str(REPO) not in done.stdout
