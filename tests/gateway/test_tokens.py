"""Token lifecycle end to end, with real gateway (and rooms) processes: expiry closes 4401 unless
an `auth` frame refreshed the token first, the `refresh` hint, refused refreshes, RFC 7519
NumericDates, disconnect-user and revocation across gateways, JWKS with a key rotated during the
test (served by a local HTTP server), iss / aud, and the secret rule at start."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from roomstream_contracts.tokens import DEV_JWT_SECRET

from tests.conftest import JWT_SECRET, REDIS_URL, service_token
from tests.gateway.helpers import close_code, open_ws, recv, request

GATEWAY = "roomstream_gateway"
ROOMS = "roomstream_rooms"


def token(
    user: str,
    *,
    exp_in: float = 3600.0,
    iat_ago: float = 0.0,
    secret: str = JWT_SECRET,
    **claims: Any,
) -> str:
    """Integer NumericDates, as most issuers write them (floats: `test_numeric_dates...`)."""
    now = time.time()
    payload: dict[str, Any] = {"sub": user, "exp": int(now + exp_in), "iat": int(now - iat_ago)}
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


async def welcomed(ws_url: str, tok: str) -> Any:
    ws = await open_ws(ws_url, token=tok)
    frame = await recv(ws, 10)
    assert frame["type"] == "welcome", frame
    return ws


async def auth(ws: Any, tok: str) -> dict[str, Any]:
    return await request(ws, {"type": "auth", "token": tok})


async def still_open(ws: Any) -> bool:
    return (await request(ws, {"type": "ping"}))["type"] == "pong"


# -- expiry, refresh, hint --------------------------------------------------------------------


async def test_expiry_refresh_and_hint(cluster, namespace):
    gw = cluster.start(GATEWAY, env={"ROOMSTREAM_TOKEN_REFRESH_LEAD_S": "1.5"})

    async def expires_with_hint() -> None:
        tok_exp = int(time.time() + 3.0)
        ws = await welcomed(gw.ws_url, token("ann", exp_in=3.0))
        hint = await recv(ws, 10)
        assert hint["type"] == "refresh" and abs(hint["exp"] - tok_exp) < 0.01, hint
        assert 0 <= hint["expires_in"] <= 1.6
        assert await close_code(ws, 10) == 4401
        assert time.time() >= tok_exp - 0.05  # not before the token's exp

    async def refreshed_survives() -> None:
        first_exp = int(time.time() + 3.0)
        ws = await welcomed(gw.ws_url, token("ben", exp_in=3.0))
        assert (await recv(ws, 10))["type"] == "refresh"
        reply = await auth(ws, token("ben", exp_in=3600))
        assert reply["type"] == "ack" and reply["exp"] > first_exp + 3000, reply
        await asyncio.sleep(max(0.0, first_exp - time.time()) + 1.5)
        assert await still_open(ws)  # past the first exp
        await ws.close()

    async def refused_refreshes_keep_the_old_expiry() -> None:
        first_exp = int(time.time() + 3.0)
        ws = await welcomed(gw.ws_url, token("cat", exp_in=3.0))
        refusals = [
            (token("dan", exp_in=3600), "forbidden"),  # another user's valid token
            ("garbage", "bad_request"),
            (token("cat", exp_in=-5), "bad_request"),  # expired
            (token("cat", exp_in=3600, secret="x" * 40), "bad_request"),  # wrong key
            (token("cat", exp_in=3600, iat="1700000000"), "bad_request"),  # string iat
        ]
        for bad, code in refusals:
            reply = await auth(ws, bad)
            assert reply["type"] == "error" and reply["code"] == code, (bad, reply)
        assert await close_code(ws, 10) == 4401
        assert time.time() >= first_exp - 0.05

    await asyncio.gather(
        expires_with_hint(), refreshed_survives(), refused_refreshes_keep_the_old_expiry()
    )


async def test_python_client_refreshes_on_the_hint(cluster, namespace):
    """`roomstream_client.Client` with a token callable answers `refresh` with a new token: the
    connection outlives several short-lived tokens without a reconnect."""
    from roomstream_client import Client

    gw = cluster.start(GATEWAY, env={"ROOMSTREAM_TOKEN_REFRESH_LEAD_S": "1.5"})
    issued: list[float] = []

    def fresh() -> str:
        issued.append(time.time())
        return token("cli", exp_in=3.0)

    async with Client(gw.ws_url, fresh) as c:
        await asyncio.sleep(7.0)  # two token lifetimes and more
        await c.ping()
        assert c.stats.reconnects == 0 and c.stats.closes == []
    assert len(issued) >= 3  # connect + at least two refreshes


async def test_numeric_dates_per_rfc7519(cluster, namespace):
    gw = cluster.start(GATEWAY)
    now = time.time()
    # Float exp / iat / nbf are NumericDates: accepted.
    ws = await welcomed(
        gw.ws_url,
        jwt.encode(
            {"sub": "flo", "exp": now + 600.25, "iat": now - 0.5, "nbf": now - 1.5}, JWT_SECRET
        ),
    )
    await ws.close()
    # A string is not a NumericDate (PyJWT alone accepts "123"): 4401.
    for claims in (
        {"sub": "str", "exp": str(int(now + 600))},
        {"sub": "str", "exp": now + 600, "iat": str(int(now))},
        {"sub": "str", "exp": now + 600, "nbf": str(int(now))},
        {"sub": "str", "exp": True},
        {"sub": "str", "exp": now + 600, "nbf": now + 300},  # not valid yet
        {"sub": "str", "exp": 1e300},  # past year 9999: would overflow timers and JSON
        {"sub": "str", "exp": 10**30},
    ):
        bad = await open_ws(gw.ws_url, token=jwt.encode(claims, JWT_SECRET))
        assert await close_code(bad, 10) == 4401, claims


# -- disconnect-user and revocation -----------------------------------------------------------


def _deployment(cluster: Any, gateways: int) -> tuple[Any, list[Any]]:
    rooms = cluster.start(ROOMS)
    env = {"ROOMSTREAM_ROOMS_URL": rooms.url}
    return rooms, [cluster.start(GATEWAY, env=env) for _ in range(gateways)]


async def test_disconnect_user_everywhere(cluster, namespace):
    rooms, (gw1, gw2) = _deployment(cluster, 2)
    alice = [await welcomed(gw1.ws_url, token("alice")), await welcomed(gw2.ws_url, token("alice"))]
    bob = [await welcomed(gw1.ws_url, token("bob")), await welcomed(gw2.ws_url, token("bob"))]
    async with httpx.AsyncClient(base_url=rooms.url, timeout=10) as http:
        # Another user may not kick alice; alice may kick herself; a service may.
        r = await http.post(
            "/users/alice/disconnect", headers={"Authorization": f"Bearer {token('bob')}"}
        )
        assert r.status_code == 403
        r = await http.post("/users/alice/disconnect", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        r = await http.post(
            "/users/alice/disconnect",
            json={"reason": "abuse"},
            headers={"Authorization": f"Bearer {service_token()}"},
        )
        assert r.status_code == 202, r.text
    codes = await asyncio.gather(*(close_code(ws, 10) for ws in alice))
    assert codes == [1008, 1008]
    for ws in bob:
        assert await still_open(ws)
    # A kick is not a revocation: alice may come back with her token.
    again = await welcomed(gw2.ws_url, token("alice"))
    for ws in [again, *bob]:
        await ws.close()


async def test_revocation_at_connect_on_refresh_and_of_open_sockets(cluster, namespace):
    rooms, (gw1, gw2) = _deployment(cluster, 2)
    old = token("rita", iat_ago=120)
    newer = token("rita", iat_ago=0)
    open_old = await welcomed(gw1.ws_url, old)
    open_new = await welcomed(gw2.ws_url, newer)
    other = await welcomed(gw1.ws_url, token("sam", iat_ago=120))
    async with httpx.AsyncClient(base_url=rooms.url, timeout=10) as http:
        headers = {"Authorization": f"Bearer {service_token()}"}
        r = await http.post(
            "/users/rita/revoke", json={"before": "soon"}, headers=headers
        )  # a string is not a NumericDate
        assert r.status_code == 400
        r = await http.post(
            "/users/rita/revoke", json={"before": time.time() - 60}, headers=headers
        )
        assert r.status_code == 200, r.text
        cutoff = r.json()["before"]
        # An earlier cutoff never lowers it.
        r = await http.post("/users/rita/revoke", json={"before": 1000.0}, headers=headers)
        assert r.json()["before"] == cutoff
    # The open socket with the old token is closed (4401) on its gateway; the newer one is not.
    assert await close_code(open_old, 10) == 4401
    assert await still_open(open_new)
    assert await still_open(other)
    # At connect: the old token is refused, the newer works, on either gateway.
    for gw in (gw1, gw2):
        refused = await open_ws(gw.ws_url, token=old)
        assert await close_code(refused, 10) == 4401
        ok = await welcomed(gw.ws_url, token("rita", iat_ago=1))
        await ok.close()
    # On refresh: the old token is refused (forbidden), a newer one accepted.
    reply = await auth(open_new, old)
    assert reply["type"] == "error" and reply["code"] == "forbidden", reply
    reply = await auth(open_new, token("rita"))
    assert reply["type"] == "ack"
    # A token without iat cannot prove it is newer than the cutoff: refused.
    no_iat = jwt.encode({"sub": "rita", "exp": time.time() + 60}, JWT_SECRET)
    refused = await open_ws(gw1.ws_url, token=no_iat)
    assert await close_code(refused, 10) == 4401
    await open_new.close()
    await other.close()


# -- JWKS with rotation, iss / aud ------------------------------------------------------------


class Jwks:
    """A local JWKS endpoint (127.0.0.1) whose key set the test can replace."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    server = Jwks()
    yield server
    server.close()


def _public_jwk(private: Any, kid: str, alg: str) -> dict[str, Any]:
    algo = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
    jwk: dict[str, Any] = json.loads(algo.to_jwk(private.public_key()))
    jwk.update(kid=kid, use="sig", alg=alg)
    return jwk


async def test_jwks_rotation_issuer_and_audience(cluster, namespace, jwks):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks.keys = [_public_jwk(rsa_key, "k1", "RS256")]
    iss, aud = "https://issuer.test", "roomstream"
    gw = cluster.start(
        GATEWAY,
        env={
            "ROOMSTREAM_JWKS_URL": jwks.url,
            "ROOMSTREAM_JWKS_REFRESH_MIN_S": "1",
            "ROOMSTREAM_JWT_ISSUER": iss,
            "ROOMSTREAM_JWT_AUDIENCE": aud,
            "ROOMSTREAM_SERVICE_TOKEN": "unused-by-this-test",
        },
    )

    def signed(key: Any, kid: str, alg: str, **claims: Any) -> str:
        now = time.time()
        payload = {"sub": "jay", "exp": now + 600, "iat": now, "iss": iss, "aud": aud, **claims}
        return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})

    ws = await welcomed(gw.ws_url, signed(rsa_key, "k1", "RS256"))
    # iss / aud mismatches and a missing aud: 4401.
    for bad in (
        signed(rsa_key, "k1", "RS256", iss="https://evil.test"),
        signed(rsa_key, "k1", "RS256", aud="someone-else"),
        jwt.encode(
            {"sub": "jay", "exp": time.time() + 600, "iss": iss},
            rsa_key,
            "RS256",
            headers={"kid": "k1"},
        ),
        token("jay", iss=iss, aud=aud),  # HS256: no shared secret is accepted with a JWKS
    ):
        refused = await open_ws(gw.ws_url, token=bad)
        assert await close_code(refused, 10) == 4401
    # Rotation: the issuer publishes an ES256 key k2 and signs with it.
    jwks.keys = [_public_jwk(ec_key, "k2", "ES256"), _public_jwk(rsa_key, "k1", "RS256")]
    await asyncio.sleep(1.1)  # past the refetch bound since the last fetch
    rotated = await welcomed(gw.ws_url, signed(ec_key, "k2", "ES256"))
    # A refresh with the rotated key works too.
    assert (await auth(ws, signed(ec_key, "k2", "ES256")))["type"] == "ack"
    # Made-up kids cannot make every connect fetch the JWKS: at most one fetch per second.
    before, start = jwks.fetches, time.monotonic()
    for i in range(20):
        refused = await open_ws(gw.ws_url, token=signed(ec_key, f"made-up-{i}", "ES256"))
        assert await close_code(refused, 10) == 4401
    elapsed = time.monotonic() - start
    assert jwks.fetches - before <= int(elapsed) + 2, (jwks.fetches - before, elapsed)
    for s in (ws, rotated):
        assert await still_open(s)
        await s.close()


# -- the secret rule --------------------------------------------------------------------------


def _start(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ROOMSTREAM_")}
    full.update({"REDIS_URL": REDIS_URL, "ROOMSTREAM_PORT": "1", **env})
    return subprocess.run(
        [sys.executable, "-m", module], env=full, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("module", "secret", "says"),
    [
        (GATEWAY, DEV_JWT_SECRET, "development secret"),
        (ROOMS, DEV_JWT_SECRET, "development secret"),
        ("roomstream_history", "0123456789abcdef", "16 bytes; HS256 needs at least 32"),
        ("roomstream_monitor", None, "development secret"),  # the default is the dev secret
    ],
)
def test_services_refuse_a_weak_secret_outside_the_dev_runner(module, secret, says):
    env = {"ROOMSTREAM_JWT_SECRET": secret} if secret is not None else {}
    out = _start(module, env)
    assert out.returncode == 2, (out.returncode, out.stderr[-500:])
    assert "refusing to start" in out.stderr and says in out.stderr, out.stderr[-500:]


async def test_the_dev_runner_flag_allows_the_dev_secret(cluster, namespace):
    gw = cluster.start(
        GATEWAY, env={"ROOMSTREAM_JWT_SECRET": DEV_JWT_SECRET, "ROOMSTREAM_DEV_MODE": "1"}
    )
    ws = await welcomed(gw.ws_url, token("dev", secret=DEV_JWT_SECRET))
    await ws.close()
