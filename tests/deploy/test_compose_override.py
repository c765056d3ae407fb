"""The compose test's override, checked without an engine: what `docker-compose up` would run
(tests/deploy/test_compose_up.py `prepare`) keeps every container on the host network, on ports of
its own on 127.0.0.1, with the local images, and changes nothing else of compose.yaml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.compose_images import STAND_INS
from tests.deploy.compose_override import default_services
from tests.deploy.test_compose_up import COMPOSE, RESERVED, Prepared, compose_config, prepare

PRODUCTION_PORTS = {"5432", "6379", "8080", *(str(p) for p in range(8000, 8401))}


def resolved(tmp_path: Path) -> tuple[Prepared, dict[str, Any], dict[str, Any]]:
    prepared = prepare(tmp_path)
    test = yaml.safe_load(prepared.compose_file.read_text())
    production = compose_config([COMPOSE], prepared.env)
    return prepared, test, production


def test_every_container_on_the_host_network_with_ports_of_its_own(tmp_path: Path) -> None:
    prepared, test, production = resolved(tmp_path)
    assert set(test["services"]) == set(default_services(production))
    assert set(prepared.ports) == {
        "redis", "postgres", "rooms", "history", "monitor", "hooks", "gateway-1", "gateway-2", "lb"
    }  # fmt: skip
    assert not set(prepared.ports.values()) & RESERVED
    assert len(set(prepared.ports.values())) == len(prepared.ports)
    assert "networks" not in test or not test["networks"]
    for name, svc in test["services"].items():
        assert svc["network_mode"] == "host", name
        assert "ports" not in svc and "networks" not in svc, name
        text = json.dumps([svc.get("environment"), svc.get("command"), svc.get("healthcheck")])
        # No container of the stack by its compose name (no DNS on the host network), no
        # production port: only 127.0.0.1 test ports. (The OTLP endpoint names the collector of
        # the observability profile, not started; traces are off.)
        for other in test["services"]:
            assert f"//{other}:" not in text and f"@{other}:" not in text, (name, other)
        for word in text.replace('"', " ").replace(",", " ").split():
            assert word.rsplit(":", 1)[-1].split("/")[0] not in PRODUCTION_PORTS, (name, word)


def test_images_swapped_and_the_rest_is_production(tmp_path: Path) -> None:
    prepared, test, production = resolved(tmp_path)
    services = test["services"]
    assert services["redis"]["image"] == STAND_INS["redis"]
    assert services["postgres"]["image"] == STAND_INS["postgres"]
    assert services["lb"]["image"] == STAND_INS["haproxy"]
    redis_cmd = services["redis"]["command"]
    assert (
        redis_cmd[: len(production["services"]["redis"]["command"])]
        == (production["services"]["redis"]["command"])
    )  # AOF settings kept, the port and bind added
    for name, svc in services.items():
        prod = production["services"][name]
        assert svc.get("depends_on") == prod.get("depends_on"), name
        assert svc.get("restart") == prod.get("restart"), name
        if str(prod.get("image", "")).startswith("roomstream"):
            assert svc["image"] == prod["image"] == "roomstream:latest"
            assert svc["command"] == prod["command"]
            env = svc["environment"]
            assert env["ROOMSTREAM_JWT_SECRET"] == prepared.secret
            assert len(prepared.secret.encode()) >= 32
        if "healthcheck" in prod:
            assert svc["healthcheck"]["interval"] == "1s"
            assert svc["healthcheck"]["retries"] == prod["healthcheck"]["retries"]
    lb_cfg = (tmp_path / "haproxy.cfg").read_text()
    assert f"bind 127.0.0.1:{prepared.ports['lb']}" in lb_cfg
    for gw in ("gateway-1", "gateway-2"):
        assert f"127.0.0.1:{prepared.ports[gw]}" in lb_cfg
