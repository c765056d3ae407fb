"""The HTTP API against a real rooms process: every write goes through the log and is readable
at once (read-your-write); bad input gets a clear 4xx and changes nothing."""

from __future__ import annotations

from tests.conftest import make_token
from tests.rooms.helpers import (
    FAST_ENV,
    ROOMS,
    api,
    auth,
    log_envelopes,
    log_length,
    snapshot,
)


async def test_rooms_and_members_through_the_log(cluster, namespace, database_url, redis_client):
    rooms = cluster.start(ROOMS, env=FAST_ENV)
    async with api(rooms.url) as http:
        r = await http.post(
            "/rooms",
            json={"id": "ops", "name": "Ops", "kind": "private", "members": ["bob"]},
            headers=auth("alice"),
        )
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["owner"] == "alice" and created["seq"] == 1
        assert created["members"] == ["alice", "bob"]

        r = await http.get("/rooms/ops", headers=auth("bob"))
        assert r.status_code == 200
        assert r.json() == {
            "id": "ops",
            "name": "Ops",
            "kind": "private",
            "owner": "alice",
            "created_at": created["created_at"],
            "seq": 1,
        }
        # The owner adds carol: readable right after the answer, from every read path.
        r = await http.put("/rooms/ops/members/carol", headers=auth("alice"))
        assert r.status_code == 200 and r.json()["seq"] == 2
        r = await http.get("/rooms/ops/members", headers=auth("carol"))
        assert r.json() == {"members": ["alice", "bob", "carol"]}
        r = await http.get("/users/carol/rooms", headers=auth("carol"))
        assert r.json() == {"rooms": ["ops"]}
        # Adding again changes nothing.
        r = await http.put("/rooms/ops/members/carol", headers=auth("alice"))
        assert r.status_code == 200 and r.json()["seq"] == 2
        # A member removes itself.
        r = await http.delete("/rooms/ops/members/bob", headers=auth("bob"))
        assert r.status_code == 204
        r = await http.get("/rooms/ops/members", headers=auth("alice"))
        assert r.json() == {"members": ["alice", "carol"]}
        r = await http.get("/rooms/ops", headers=auth("bob"))
        assert r.status_code == 403

        # Public room: a user adds itself; only the owner (or a service) adds others.
        r = await http.post(
            "/rooms", json={"name": "Town Hall", "kind": "public"}, headers=auth("dave")
        )
        assert r.status_code == 201
        town = r.json()["id"]
        assert town.startswith("town-hall-")
        assert (
            await http.put(f"/rooms/{town}/members/erin", headers=auth("erin"))
        ).status_code == 200
        assert (
            await http.put(f"/rooms/{town}/members/fay", headers=auth("erin"))
        ).status_code == 403
        assert (await http.put(f"/rooms/{town}/members/fay", headers=auth())).status_code == 200
        r = await http.get(f"/rooms/{town}/members", headers=auth("zed"))
        assert r.json() == {"members": ["dave", "erin", "fay"]}
        r = await http.get(f"/rooms/{town}/presence", headers=auth("zed"))
        assert r.json() == {"users": []}

        # The id is taken.
        r = await http.post(
            "/rooms", json={"id": "ops", "name": "x", "kind": "public"}, headers=auth("zed")
        )
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"

    events = [
        (e["room"], e["seq"], e["kind"], e["user"], e["data"].get("by"))
        for e in await log_envelopes(redis_client, namespace)
        if e["room"] == "ops"
    ]
    assert sorted(events, key=lambda e: e[1]) == [
        ("ops", 1, "room_created", "alice", None),
        ("ops", 2, "member_joined", "carol", "alice"),
        ("ops", 3, "member_left", "bob", "bob"),
    ]


async def test_bad_input_gets_a_clear_4xx_and_changes_nothing(
    cluster, namespace, database_url, redis_client
):
    rooms = cluster.start(ROOMS, env=FAST_ENV)
    async with api(rooms.url) as http:
        r = await http.post(
            "/rooms",
            json={"id": "vault", "name": "Vault", "kind": "private", "members": ["bob"]},
            headers=auth("alice"),
        )
        assert r.status_code == 201
        before = await snapshot(redis_client, namespace, database_url)
        length = await log_length(redis_client, namespace)

        expired = make_token("alice", ttl_s=-60)
        cases = [
            # (method, path, body or raw bytes, headers, status, code)
            ("GET", "/rooms/nowhere", None, auth("alice"), 404, "not_found"),
            ("GET", "/rooms/nowhere/members", None, auth("alice"), 404, "not_found"),
            ("GET", "/rooms/nowhere/presence", None, auth("alice"), 404, "not_found"),
            ("PUT", "/rooms/nowhere/members/bob", None, auth("alice"), 404, "not_found"),
            ("DELETE", "/rooms/nowhere/members/bob", None, auth("alice"), 404, "not_found"),
            ("GET", "/rooms/Not%20A%20Slug", None, auth("alice"), 400, "bad_request"),
            ("PUT", "/rooms/vault/members/" + "u" * 129, None, auth("alice"), 400, "bad_request"),
            ("POST", "/rooms", b"{not json", auth("alice"), 400, "bad_request"),
            ("POST", "/rooms", b"[1, 2]", auth("alice"), 400, "bad_request"),
            ("POST", "/rooms", b"", auth("alice"), 400, "bad_request"),
            ("POST", "/rooms", {"name": 5, "kind": "public"}, auth("alice"), 400, "bad_request"),
            ("POST", "/rooms", {"name": "x", "kind": "secret"}, auth("alice"), 400, "bad_request"),
            (
                "POST",
                "/rooms",
                {"name": "x", "kind": "public", "members": "bob"},
                auth("alice"),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/rooms",
                {"name": "x", "kind": "public", "members": [1]},
                auth("alice"),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/rooms",
                {"id": "Bad Id!", "name": "x", "kind": "public"},
                auth("alice"),
                400,
                "bad_request",
            ),
            (
                "POST",
                "/rooms",
                {"id": "vault", "name": "x", "kind": "public"},
                auth("alice"),
                409,
                "conflict",
            ),
            (
                "POST",
                "/rooms",
                {"name": "x", "kind": "public", "owner": "bob"},
                auth("alice"),
                403,
                "forbidden",
            ),
            ("PUT", "/rooms/vault/members/mallory", None, auth("bob"), 403, "forbidden"),
            ("PUT", "/rooms/vault/members/mallory", None, auth("mallory"), 403, "forbidden"),
            ("DELETE", "/rooms/vault/members/alice", None, auth("bob"), 403, "forbidden"),
            ("GET", "/rooms/vault/members", None, auth("mallory"), 403, "forbidden"),
            ("GET", "/rooms/vault/presence", None, auth("mallory"), 403, "forbidden"),
            ("GET", "/users/alice/rooms", None, auth("bob"), 403, "forbidden"),
            ("GET", "/rooms/vault", None, {}, 401, "unauthorized"),
            (
                "PUT",
                "/rooms/vault/members/bob",
                None,
                {"Authorization": "Bearer nonsense"},
                401,
                "unauthorized",
            ),
            (
                "POST",
                "/rooms",
                {"name": "x", "kind": "public"},
                {"Authorization": f"Bearer {expired}"},
                401,
                "unauthorized",
            ),
            (
                "DELETE",
                "/rooms/vault/members/bob",
                None,
                {"Authorization": "Basic YTpi"},
                401,
                "unauthorized",
            ),
            ("PATCH", "/rooms/vault", None, auth("alice"), 405, "bad_request"),
            ("GET", "/no/such/path", None, auth("alice"), 404, "not_found"),
        ]
        for method, path, body, headers, status, code in cases:
            kwargs: dict = {"headers": headers}
            if isinstance(body, bytes):
                kwargs["content"] = body
            elif body is not None:
                kwargs["json"] = body
            r = await http.request(method, path, **kwargs)
            assert r.status_code == status, (method, path, body, r.status_code, r.text)
            error = r.json()["error"]
            assert error["code"] == code, (method, path, error)
            assert error["message"], (method, path)

        assert await log_length(redis_client, namespace) == length
        assert await snapshot(redis_client, namespace, database_url) == before
        r = await http.get("/rooms/vault/members", headers=auth("alice"))
        assert r.json() == {"members": ["alice", "bob"]}
        # Every error answer is counted by code.
        metrics = (await http.get("/metrics")).text
        for code in ("not_found", "bad_request", "forbidden", "unauthorized", "conflict"):
            assert f'roomstream_rooms_api_errors_total{{code="{code}"' in metrics, code
