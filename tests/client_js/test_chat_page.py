"""The chat page (served by every gateway at `/`, built on the SDK's browser bundle) in headless
Chromium (Debian's package, driven by Playwright): alice on gateway A's page, bob on gateway B's;
they chat; A is SIGKILLed while alice keeps typing; after A comes back both pages show the same
messages, each once, in the same order, including those typed during the outage. A screenshot is
kept in test-artifacts/chat.png (docs/img/chat.png is a copy of it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Cluster, service_token
from tests.monitor.test_dashboard import ARGS, chromium  # noqa: F401 - the fixture

GATEWAY = "roomstream_gateway"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DEADLINE_S = 45.0

Snapshot = list[dict[str, Any]]


async def eventually(
    check: Callable[[], Awaitable[Any]], what: str, deadline_s: float = DEADLINE_S
) -> Any:
    end = time.monotonic() + deadline_s
    last: Any = None
    while time.monotonic() < end:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {what} (last: {last})")


async def test_chat_pages_on_two_gateways_show_every_message_once_across_a_sigkill(
    cluster: Cluster,
    chromium: str,  # noqa: F811
) -> None:
    from playwright.async_api import Page, async_playwright

    rooms = cluster.start("roomstream_rooms", name="rooms")
    history = cluster.start("roomstream_history", name="history")
    gw_env = {
        "ROOMSTREAM_DEV_LOGIN": "1",
        "ROOMSTREAM_ROOMS_URL": rooms.url,
        "ROOMSTREAM_HISTORY_URL": history.url,
    }
    gw_a = cluster.start(GATEWAY, env={**gw_env, "ROOMSTREAM_NODE_ID": "gw-a"}, name="gw-a")
    gw_b = cluster.start(GATEWAY, env={**gw_env, "ROOMSTREAM_NODE_ID": "gw-b"}, name="gw-b")
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(
            f"{rooms.url}/rooms",
            json={
                "id": "general",
                "name": "General",
                "kind": "public",
                "members": ["alice", "bob"],
            },
            headers={"Authorization": f"Bearer {service_token()}"},
        )
        assert r.status_code == 201, r.text
        r = await http.post(
            f"{rooms.url}/rooms",
            json={"id": "random", "name": "Random", "kind": "public", "members": ["alice", "bob"]},
            headers={"Authorization": f"Bearer {service_token()}"},
        )
        assert r.status_code == 201, r.text

    async def snapshot(page: Page) -> Snapshot:
        shown: Snapshot = await page.evaluate("window.roomstreamChat.snapshot('general')")
        return shown

    async def say(page: Page, text: str) -> None:
        await page.fill("#text", text)
        await page.press("#text", "Enter")

    def texts(shown: Snapshot, *, pending: bool = False) -> list[str]:
        return [m["text"] for m in shown if m["pending"] == pending]

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            pages: dict[str, Page] = {}
            errors: list[str] = []
            for user, gw in (("alice", gw_a), ("bob", gw_b)):
                context = await browser.new_context(viewport={"width": 1100, "height": 640})
                page = await context.new_page()
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(f"{gw.url}/")
                await page.fill("#user", user)
                await page.click("#login button")
                await page.wait_for_function(
                    "document.body.dataset.state === 'connected' && "
                    "document.querySelector('#rooms li[data-room=general]') !== null",
                    timeout=DEADLINE_S * 1000,
                )
                pages[user] = page
            alice, bob = pages["alice"], pages["bob"]

            await say(alice, "hi bob")
            await say(bob, "hi alice")
            await say(alice, "how are you?")

            async def both_show(expected: set[str]) -> bool:
                a, b = await snapshot(alice), await snapshot(bob)
                return expected <= set(texts(a)) and expected <= set(texts(b))

            await eventually(
                lambda: both_show({"hi bob", "hi alice", "how are you?"}), "the first messages"
            )

            gw_a.kill()  # SIGKILL: no close frame, nothing cleaned up
            await alice.wait_for_function(
                "document.body.dataset.state !== 'connected'", timeout=DEADLINE_S * 1000
            )
            assert await alice.is_visible("#banner")
            outage = ["typed while A is down", "still down?", "third one offline"]
            for text in outage:
                await say(alice, text)
            await say(bob, "bob during the outage")
            shown = await snapshot(alice)
            assert set(outage) <= set(texts(shown, pending=True)), shown
            assert all(m["state"] == "sending…" for m in shown if m["text"] in outage)

            # A comes back on the same port; alice's page reconnects to it and resumes.
            cluster.start(GATEWAY, port=gw_a.port, env={**gw_env, "ROOMSTREAM_NODE_ID": "gw-a"})
            await alice.wait_for_function(
                "document.body.dataset.state === 'connected'", timeout=DEADLINE_S * 1000
            )
            await say(alice, "back again")
            await say(bob, "welcome back")
            everything = {
                "hi bob",
                "hi alice",
                "how are you?",
                *outage,
                "bob during the outage",
                "back again",
                "welcome back",
            }

            async def converged() -> tuple[Snapshot, Snapshot] | None:
                a, b = await snapshot(alice), await snapshot(bob)
                if set(texts(a)) == everything and not texts(a, pending=True) and a == b:
                    return a, b
                return None

            a_shown, _ = await eventually(converged, "both pages showing the same messages")
            seqs = [m["seq"] for m in a_shown]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "in seq order, once"
            assert len(texts(a_shown)) == len(everything), "each message once"
            order = texts(a_shown)
            assert order.index(outage[0]) < order.index(outage[1]) < order.index(outage[2])
            assert not await alice.is_visible("#banner")
            # A message in another room shows as unread on alice's page.
            await bob.click("#rooms li[data-room=random]")
            await say(bob, "over here")
            await alice.wait_for_selector(
                "#rooms li[data-room=random] .unread", timeout=DEADLINE_S * 1000
            )
            assert await alice.text_content("#rooms li[data-room=random] .unread") == "1"
            assert errors == []
            ARTIFACTS.mkdir(exist_ok=True)
            await alice.screenshot(path=str(ARTIFACTS / "chat.png"))
        finally:
            await browser.close()
