"""Running the SDK's Node scripts (libs/client-js) from pytest: where node and the installed
packages are, and one scenario run with its `RESULT` line parsed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "libs" / "client-js"


def require_node() -> str:
    """The node binary with the package's dependencies installed (`npm ci`), else skip locally
    and fail in CI (scripts/test.sh runs `npm ci` first)."""
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "node is not installed"
    elif not (PACKAGE / "node_modules" / "tsx").is_dir():
        problem = "libs/client-js has no node_modules: run `npm ci` there"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    assert node is not None
    return node


def run_scenario(name: str, env: dict[str, str], timeout_s: float = 120) -> dict[str, Any]:
    """Run `test/e2e/scenarios.ts NAME`; assert it exits 0 and return its RESULT."""
    node = require_node()
    proc = subprocess.run(
        [node, "--import", "tsx", "test/e2e/scenarios.ts", name],
        cwd=PACKAGE,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    output = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, f"scenario {name} failed ({proc.returncode})\n{output}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"scenario {name} printed no RESULT\n{output}"
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result
