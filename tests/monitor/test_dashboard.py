"""The dashboard renders live data from a real cluster in headless Chromium (Debian's package,
driven by Playwright), the Webhooks panel included (a real hooks process delivering to a real
receiver); a screenshot is kept in test-artifacts/monitor-dashboard.png."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from roomstream_client import Client

from tests.conftest import Cluster, make_token, service_token
from tests.hooks.helpers import FAST, add_endpoint
from tests.hooks.receiver import SECRET_A, Receiver
from tests.monitor.helpers import stats, wait_for

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

CHART_DATA = """() => {
  const c = window.roomstreamCharts;
  const sets = (chart) => chart.data.datasets.map((d) => ({label: d.label, data: d.data}));
  return {
    updates: Number(document.body.dataset.updates || 0),
    connections: sets(c.connections),
    messages: sets(c.messages),
    latency: sets(c.latency),
    lag: sets(c.lag),
    nodes: sets(c.nodes),
    rooms: c.rooms.data.labels,
    rows: [...document.querySelectorAll('#nodes tbody tr')].map((tr) => tr.dataset.node),
    hooks: document.getElementById('hooks-panel').hidden ? null : Object.fromEntries(
      [...document.querySelectorAll('#hooks tbody tr')].map(
        (tr) => [tr.dataset.endpoint, [...tr.children].map((td) => td.textContent)])),
    canvases: [...document.querySelectorAll('canvas')].map((cv) => cv.width * cv.height),
  };
}"""


def last_y(datasets: list[dict[str, Any]], label: str) -> float | None:
    for ds in datasets:
        if ds["label"] == label and ds["data"]:
            return float(ds["data"][-1]["y"])
    return None


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (scripts/ensure-services.sh installs it)")
        pytest.skip("chromium is not installed")
    return CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))


async def test_dashboard_shows_live_cluster_data(cluster: Cluster, chromium: str) -> None:
    from playwright.async_api import async_playwright

    rooms = cluster.start("roomstream_rooms", name="rooms")
    gateways = [
        cluster.start(
            "roomstream_gateway",
            env={"ROOMSTREAM_ROOMS_URL": rooms.url, "ROOMSTREAM_NODE_ID": name},
            name=name,
            ready_path="/healthz",
        )
        for name in ("gw-a", "gw-b")
    ]
    receiver = await Receiver(SECRET_A).start()
    hooks = cluster.start(
        "roomstream_hooks", name="hooks", env={"ROOMSTREAM_NODE_ID": "hooks-dash", **FAST}
    )
    monitor = cluster.start("roomstream_monitor", name="monitor")
    await add_endpoint(hooks, "dash-hook", receiver.url, SECRET_A, ["message"])
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(
            f"{rooms.url}/rooms",
            json={"id": "dash", "name": "Dash", "kind": "public", "members": ["alice", "bob"]},
            headers={"Authorization": f"Bearer {service_token()}"},
        )
        assert r.status_code == 201, r.text
    alice = Client(gateways[0].ws_url, make_token("alice"))
    bob = Client(gateways[1].ws_url, make_token("bob"))
    await alice.connect()
    await bob.connect()

    async def chatter() -> None:
        i = 0
        while True:
            await alice.send("dash", f"tick {i}")
            i += 1
            await asyncio.sleep(0.25)

    sender = asyncio.create_task(chatter())
    try:

        async def live() -> bool:
            s = await stats(monitor.url)
            return bool(s) and s["connections"] == 2 and s["messages_per_s"] > 0

        await wait_for(live, what="the monitor seeing connections and messages")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(f"{monitor.url}/#token={service_token()}")

                async def rendered() -> dict[str, Any] | None:
                    data: dict[str, Any] = await page.evaluate(CHART_DATA)
                    ok = (
                        data["updates"] >= 2
                        and last_y(data["connections"], "gw-a") == 1
                        and last_y(data["connections"], "gw-b") == 1
                        and any(p["y"] > 0 for p in data["messages"][0]["data"])
                        and last_y(data["latency"], "p99") is not None
                        and {"rooms", "monitor"} <= {d["label"] for d in data["lag"]}
                        and (last_y(data["nodes"], "up") or 0) >= 4
                        and "dash" in data["rooms"]
                        and data["hooks"] is not None
                        and "dash-hook" in data["hooks"]
                        and int(data["hooks"]["dash-hook"][1]) > 0  # events delivered
                        and data["hooks"]["dash-hook"][5] != "–"  # p50 latency
                    )
                    return data if ok else None

                data = await wait_for(rendered, what="charts with live data")
                assert {"gw-a", "gw-b", "hooks-dash"} <= set(data["rows"])
                assert int(data["hooks"]["dash-hook"][1]) <= len(receiver.unique_ids())
                assert all(size > 0 for size in data["canvases"])
                assert await page.text_content("#tile-connections") == "2"
                assert errors == []
                ARTIFACTS.mkdir(exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "monitor-dashboard.png"), full_page=True)
            finally:
                await browser.close()
    finally:
        await receiver.stop()
        sender.cancel()
        with contextlib.suppress(BaseException):
            await sender
        for c in (alice, bob):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.close(), 5)
