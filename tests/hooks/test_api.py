"""The endpoints API against a real hooks process: CRUD, service-token only, bad input refused,
endpoints from the environment, and routing by event kind and room filter."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from tests.conftest import Cluster, make_token
from tests.hooks.helpers import Log, add_endpoint, api, start_hooks, wait_for
from tests.hooks.receiver import SECRET_A, SECRET_B, Receiver


async def test_crud_and_auth(cluster: Cluster) -> None:
    hooks = await start_hooks(cluster)
    async with api(hooks) as client:
        created = await client.post(
            "/endpoints", json={"url": "http://127.0.0.1:9/x", "kinds": ["message"]}
        )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["secret"].startswith("whsec_")  # generated, shown once in full
        eid = body["id"]
        listed = (await client.get("/endpoints")).json()["endpoints"]
        assert [e["id"] for e in listed] == [eid]
        assert listed[0]["secret"] != body["secret"]  # masked
        r = await client.put(
            f"/endpoints/{eid}",
            json={"url": "http://127.0.0.1:9/y", "kinds": ["message", "online"], "rooms": ["r1"]},
        )
        assert r.status_code == 200, r.text
        got = (await client.get(f"/endpoints/{eid}")).json()
        assert got["url"].endswith("/y") and got["kinds"] == ["message", "online"]
        assert got["rooms"] == ["r1"]
        dup = await client.post(
            "/endpoints", json={"id": eid, "url": "http://127.0.0.1:9/x", "kinds": ["message"]}
        )
        assert dup.status_code == 409
        assert (await client.delete(f"/endpoints/{eid}")).status_code == 204
        assert (await client.get(f"/endpoints/{eid}")).status_code == 404
        assert (await client.delete(f"/endpoints/{eid}")).status_code == 404
        assert (await client.get(f"/endpoints/{eid}/dead-letters")).status_code == 404

    async with api(hooks, make_token("bob")) as client:
        assert (await client.get("/endpoints")).status_code == 403
    async with api(hooks, "garbage") as client:
        assert (await client.get("/endpoints")).status_code == 401


async def test_bad_input_is_refused(cluster: Cluster) -> None:
    hooks = await start_hooks(cluster)
    bad = [
        {"url": "http://127.0.0.1:9/\x00", "kinds": ["message"]},
        {"url": "http://127.0.0.1:9/" + "a" * 10_000, "kinds": ["message"]},
        {"url": "ftp://127.0.0.1/", "kinds": ["message"]},
        {"url": "http://127.0.0.1:9/", "kinds": []},
        {"url": "http://127.0.0.1:9/", "kinds": ["typing"]},
        {"url": "http://127.0.0.1:9/", "kinds": ["message"], "secret": "not-a-secret"},
        {"url": "http://127.0.0.1:9/", "kinds": ["message"], "secret": "whsec_c2hvcnQ="},
        {"url": "http://127.0.0.1:9/", "kinds": ["message"], "rooms": ["bad room\x00"]},
        {"url": "http://127.0.0.1:9/", "kinds": ["message"], "id": "a/b"},
        {"url": "http://127.0.0.1:9/", "kinds": ["message"], "extra": 1},
        ["not", "an", "object"],
    ]
    async with api(hooks) as client:
        for body in bad:
            r = await client.post("/endpoints", json=body)
            assert r.status_code == 400, (body, r.text)
            assert r.json()["error"]["code"] == "bad_request"
        r = await client.post("/endpoints", content=b"{not json")
        assert r.status_code == 400
        r = await client.get("/endpoints/x/dead-letters?limit=abc")
        assert r.status_code in (400, 404)
        assert (await client.get("/endpoints")).json()["endpoints"] == []
    assert hooks.running


async def test_routing_by_kind_and_room_and_env_endpoints(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    a = await Receiver(SECRET_A).start()
    b = await Receiver(SECRET_B).start()
    try:
        env_endpoints = [
            {"id": "env-a", "url": a.url, "secret": SECRET_A, "kinds": ["message"], "rooms": ["r1"]}
        ]
        hooks = await start_hooks(
            cluster, {"ROOMSTREAM_HOOKS_ENDPOINTS": json.dumps(env_endpoints)}
        )
        await add_endpoint(hooks, "api-b", b.url, SECRET_B, ["room_created", "message_deleted"])
        async with api(hooks) as client:
            listed = (await client.get("/endpoints")).json()["endpoints"]
        assert {(e["id"], e["source"]) for e in listed} == {("env-a", "env"), ("api-b", "api")}
        log = Log(redis_client, namespace)
        await log.room("r1")
        await log.room("r2")
        m1 = await log.send("r1", "one")
        await log.send("r2", "two")
        await wait_for(lambda: len(b.events) >= 2 and len(a.events) >= 1, what="deliveries")
        await wait_for(log.hooks_group_settled, what="log acknowledged")
        assert [e["id"] for e in a.events] == [m1.id]
        assert a.events[0]["data"]["text"] == "one" and a.events[0]["seq"] == 2
        assert sorted(e["room"] for e in b.events) == ["r1", "r2"]
        assert {e["kind"] for e in b.events} == {"room_created"}
        assert a.bad_signatures == 0 and b.bad_signatures == 0
    finally:
        await a.stop()
        await b.stop()
