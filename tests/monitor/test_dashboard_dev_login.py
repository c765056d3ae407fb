"""The dashboard under the development runner opens with data without a pasted token (the
monitor hands out a short-lived service token at `/dev/token` with ROOMSTREAM_DEV_LOGIN=1, as
`roomstream up` sets it); without that setting `/dev/token` is a 404 and the page asks for a token."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Cluster
from tests.monitor.test_dashboard import ARGS, chromium  # noqa: F401 - the fixture

PAGE_STATE = """() => ({
  updates: Number(document.body.dataset.updates || 0),
  form: !document.getElementById('token-form').hidden,
  status: document.getElementById('status').textContent,
})"""


async def open_dashboard(url: str, chromium_path: str) -> dict[str, Any]:
    """Open the dashboard with no token in the URL or storage; its state after the first polls."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path, args=ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{url}/")
            await page.wait_for_function(
                "Number(document.body.dataset.updates || 0) >= 2 || "
                "!document.getElementById('token-form').hidden",
                timeout=30_000,
            )
            state: dict[str, Any] = await page.evaluate(PAGE_STATE)
            state["errors"] = errors
            return state
        finally:
            await browser.close()


async def test_dev_runner_dashboard_opens_with_data_without_a_token(
    cluster: Cluster,
    chromium: str,  # noqa: F811
) -> None:
    env = {"ROOMSTREAM_DEV_LOGIN": "1", "ROOMSTREAM_DEV_MODE": "1"}  # as `roomstream up` sets
    monitor = cluster.start("roomstream_monitor", name="monitor", env=env)
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(f"{monitor.url}/dev/token")
        assert r.status_code == 200
        token = r.json()["token"]
        stats = await http.get(
            f"{monitor.url}/api/stats", headers={"Authorization": f"Bearer {token}"}
        )
        assert stats.status_code in (200, 503), stats.text  # 503: no snapshot yet
    state = await open_dashboard(monitor.url, chromium)
    assert state["updates"] >= 2, state
    assert not state["form"]
    assert state["errors"] == []


async def test_production_dashboard_still_requires_a_service_token(
    cluster: Cluster,
    chromium: str,  # noqa: F811
) -> None:
    # ROOMSTREAM_DEV_LOGIN without the development runner's ROOMSTREAM_DEV_MODE: no service
    # token for anyone who asks.
    monitor = cluster.start("roomstream_monitor", name="monitor", env={"ROOMSTREAM_DEV_LOGIN": "1"})
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(f"{monitor.url}/dev/token")).status_code == 404
        assert (await http.get(f"{monitor.url}/api/stats")).status_code == 401
    state = await open_dashboard(monitor.url, chromium)
    assert state["form"], "the page asks for a token"
    assert state["updates"] == 0
    assert "unauthorized" in state["status"]
