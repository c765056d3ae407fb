"""`run_asgi`'s server ticks once a second instead of uvicorn's ten times, and a SIGTERM still
ends it at once with exit code 0 (the signal wakes the tick). In a process of its own: a stop arms
the process-wide shutdown deadline, which must not outlive a test."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx

APP = """
import sys
from roomstream_kit.serve import run_asgi

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})

run_asgi(app, "127.0.0.1", int(sys.argv[1]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_sigterm_ends_the_server_with_exit_code_0_and_it_served_with_a_date() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", APP, str(port)])
    try:
        deadline = time.monotonic() + 30
        response = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert response is not None and response.status_code == 200
        assert response.headers.get("date")  # the tick set uvicorn's Date header
        time.sleep(1.5)  # at least one tick of the slower loop
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
