"""Child processes of `roomstream up`: start with a log file, wait until ready, stop cleanly.

Children run in their own session (process group), so a Ctrl-C in the terminal reaches only the
runner, which then stops them in order: SIGTERM, wait, SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import httpx


class ChildFailed(Exception):
    """A child exited or did not become ready."""


class Child:
    """One child process, its output appended to `log_path` (and echoed with `verbose`)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        verbose: bool = False,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.verbose = verbose
        self.proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        self.started_at = time.monotonic()
        if self.verbose:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
            self._pump = asyncio.create_task(self._echo())
        else:
            log = self._open_log()
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    *self.argv,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            finally:
                log.close()

    def _open_log(self) -> BinaryIO:
        return open(self.log_path, "ab")

    async def _echo(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self._open_log() as log:
            async for line in self.proc.stdout:
                log.write(line)
                log.flush()
                sys.stdout.write(f"[{self.name}] {line.decode(errors='replace')}")
                sys.stdout.flush()

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_http_ready(self, url: str, within_s: float) -> None:
        """Poll `url` until it answers 200; `ChildFailed` if the child exits or time runs out."""
        deadline = time.monotonic() + within_s
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                if not self.running:
                    raise ChildFailed(self._exit_message())
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise ChildFailed(f"{self.name} was not ready at {url} after {within_s:.0f} s")
                await asyncio.sleep(0.2)

    def _exit_message(self) -> str:
        assert self.proc is not None
        code = self.proc.returncode
        after = time.monotonic() - self.started_at
        last = self.tail(5).strip()
        what = "exited at once" if after < 5 else f"exited after {after:.0f} s"
        return f"{self.name} {what} with code {code}" + (f": {last}" if last else "")

    async def stop(self, grace_s: float = 15.0) -> int | None:
        """SIGTERM, wait up to `grace_s`, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pump, 2.0)
        return self.proc.returncode


async def stop_all(children: Sequence[Child], grace_s: float = 15.0) -> None:
    """Stop children concurrently: all get SIGTERM at once, stragglers SIGKILL."""
    await asyncio.gather(*(c.stop(grace_s) for c in reversed(children)), return_exceptions=True)
