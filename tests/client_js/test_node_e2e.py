"""The TypeScript SDK (libs/client-js) in Node against real gateway processes: two clients on two
gateways, a gateway SIGKILLed or SIGTERMed mid-conversation, expired tokens with and without
`getToken`, a token refreshed on the open socket (`refresh` hint), and the commands. Each scenario asserts itself in Node (test/e2e/scenarios.ts); the
facts it reports are checked again here."""

from __future__ import annotations

import redis.asyncio as aioredis

from tests.client.helpers import make_room
from tests.client_js.node import require_node, run_scenario
from tests.conftest import Cluster, make_token

GATEWAY = "roomstream_gateway"
USERS = ["alice", "bob", "ann", "abe", "bea"]


async def deployment(
    cluster: Cluster,
    namespace: str,
    redis_client: aioredis.Redis,
    room: str = "lobby",
    gateway_env: dict[str, str] | None = None,
) -> dict[str, str]:
    """Two gateways (with `gateway_env` added to theirs) and a room of every user; the environment
    of a scenario."""
    require_node()
    extra = gateway_env or {}
    gw_a = cluster.start(GATEWAY, env={"ROOMSTREAM_NODE_ID": "gw-a", **extra}, name="gw-a")
    gw_b = cluster.start(GATEWAY, env={"ROOMSTREAM_NODE_ID": "gw-b", **extra}, name="gw-b")
    await make_room(redis_client, namespace, room, "alice", USERS)
    assert gw_a.proc is not None
    return {
        "GATEWAY_A": gw_a.ws_url,
        "GATEWAY_B": gw_b.ws_url,
        "GATEWAY_A_PID": str(gw_a.proc.pid),
        "ROOM": room,
        "EXPIRED_TOKEN": make_token("alice", ttl_s=-10),
        **{f"TOKEN_{user.upper()}": make_token(user) for user in USERS},
    }


async def test_two_sdk_clients_on_two_gateways_exchange_messages_exactly_once_in_order(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    env = await deployment(cluster, namespace, redis_client)
    result = run_scenario("two-gateways", env)
    seqs = result["seqs"]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert sorted(result["ids"]) == sorted(f"{u}-{i}" for u in ("alice", "bob") for i in range(20))
    assert result["ids"] == result["bob_ids"]


async def test_sigkill_of_a_gateway_every_client_resumes_without_gap_or_duplicate(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    env = await deployment(cluster, namespace, redis_client)
    result = run_scenario("sigkill", env)
    assert not cluster.procs[0].running
    assert result["before"] > 0 and result["during"] > 0 and result["after"] > 0
    assert result["offline"] > 0, "some sends were made while the clients of A were disconnected"
    assert set(result["closes"]) == {1006}, "a SIGKILL leaves no close frame"
    assert all(urls[-1].endswith(f":{cluster.procs[1].port}/ws") for urls in result["urls"])


async def test_sigterm_1012_resumes_at_once_on_the_other_gateway(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    env = await deployment(cluster, namespace, redis_client)
    # The clients of A have a 60 s backoff: being on B within the scenario's 30 s deadline means
    # they reconnected without one, as a 1012 asks.
    result = run_scenario("sigterm", env)
    assert cluster.procs[0].proc is not None and cluster.procs[0].proc.wait(20) == 0
    assert set(result["closes"]) == {1012}
    assert result["during"] >= 0 and result["after"] > 0


async def test_expired_token_with_get_token_reconnects_and_without_it_stops_on_4401(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    env = await deployment(cluster, namespace, redis_client)
    result = run_scenario("tokens", env)
    assert result["opened_without_get_token"] == 1
    assert result["opened_same_token"] == 1
    assert result["stale_states"][-1] == "closed:4401"


async def test_get_token_answers_the_refresh_hint_on_the_same_socket_past_the_tokens_exp(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    # Hints 2 s before exp; alice's first two tokens live 6 s and 10 s (from now: node starts
    # within the first, with margin on a loaded machine), the third one long.
    env = await deployment(
        cluster, namespace, redis_client, gateway_env={"ROOMSTREAM_TOKEN_REFRESH_LEAD_S": "2"}
    )
    tokens = [make_token("alice", ttl_s=ttl) for ttl in (6, 10, 3600)]
    result = run_scenario("refresh", {**env, "REFRESH_TOKENS": ",".join(tokens)})
    assert result["connects"] == 1, "no reconnect: the socket outlived its first token"
    assert result["closes"] == []
    assert result["refreshes"] >= 2
    assert result["given"][:3] == [0, 1, 2], "connect with the first token, refresh with the next"
    assert result["token_exp"] == result["exps"][2]
    assert result["received_after_first_exp"] > 0


async def test_commands_edit_delete_typing_presence(
    cluster: Cluster, namespace: str, redis_client: aioredis.Redis
) -> None:
    env = await deployment(cluster, namespace, redis_client)
    result = run_scenario("commands", env)
    assert result["kinds"][-3:] == ["message", "message_edited", "message_deleted"]
