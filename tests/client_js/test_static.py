"""Every gateway serves the chat page, its script and the SDK's browser bundle (the committed
copy, which libs/client-js's test/bundle.test.ts keeps equal to a fresh build)."""

from __future__ import annotations

from importlib import resources

import httpx

from tests.conftest import Cluster


async def test_gateway_serves_the_chat_page_and_the_sdk_bundle(cluster: Cluster) -> None:
    gw = cluster.start("roomstream_gateway", name="gw", ready_path="/healthz")
    static = resources.files("roomstream_gateway").joinpath("static")
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
        page = await http.get("/")
        assert page.status_code == 200 and 'src="/chat.js"' in page.text
        for path in ("/chat.js", "/roomstream-client.js"):
            r = await http.get(path)
            assert r.status_code == 200, path
            assert r.headers["content-type"].startswith("text/javascript")
            assert r.content == static.joinpath(path.lstrip("/")).read_bytes()
        assert 'from "/roomstream-client.js"' in (await http.get("/chat.js")).text
        assert (await http.get("/static/../http.py")).status_code == 404
