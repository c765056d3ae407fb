"""The compose test's override file, derived from the resolved production compose.yaml (pure).

Every container of the default profile gets `network_mode: host` (no bridge network is made) and
its own free port on 127.0.0.1 instead of the production one (the machine's shared Redis/PostgreSQL
and the dev runner use 6379, 5432, 8000-8300). Each environment URL that names another compose
service (`redis://redis:6379/0`, `http://rooms:8100`...) points at that service's test port; the
official images are swapped for the local stand-ins; every health check probes the test port,
once a second. Nothing else changes: commands, volumes, dependencies and conditions are
production's.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.deploy.lb import render_haproxy

HAPROXY_TARGET = "/usr/local/etc/haproxy/haproxy.cfg"
PRODUCTION_PORTS = {"redis": 6379, "postgres": 5432, "lb": 8080}
HEALTH_INTERVAL = "1s"


def default_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services `docker compose up` starts without `--profile`."""
    return {n: s for n, s in config["services"].items() if not s.get("profiles")}


def listen_port(name: str, service: dict[str, Any]) -> int | None:
    """The port a service listens on in production (None: a one-shot job)."""
    env = service.get("environment") or {}
    if "ROOMSTREAM_PORT" in env:
        return int(env["ROOMSTREAM_PORT"])
    return PRODUCTION_PORTS.get(name)


def point_at(value: str, ports: dict[str, int]) -> str:
    """A URL naming a compose service, pointed at 127.0.0.1:(that service's test port)."""
    if "://" not in value:
        return value
    parts = urlsplit(value)
    if parts.hostname not in ports:
        return value
    userinfo, at, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}{at}127.0.0.1:{ports[parts.hostname]}"
    return str(urlunsplit(parts._replace(netloc=netloc)))


def probe_port(test: list[str], old: int, new: int) -> list[str]:
    """A health check command with the production port replaced by the test port."""
    return [re.sub(rf"127\.0\.0\.1:{old}\b", f"127.0.0.1:{new}", word) for word in test]


def override(
    config: dict[str, Any],
    ports: dict[str, int],
    images: dict[str, str],
    jwt_secret: str,
    haproxy_cfg: str,
    nofile_hard_limit: int,
) -> dict[str, Any]:
    """The override for `config` (resolved production compose) with `ports` (service → port).

    `ulimits.nofile` above `nofile_hard_limit` (this machine's, which a container cannot exceed
    without CAP_SYS_RESOURCE) is lowered to it; nothing here depends on it being 200000.
    """
    services: dict[str, Any] = {}
    lb_port = ports["lb"]
    for name, svc in default_services(config).items():
        out: dict[str, Any] = {"network_mode": "host"}
        port = ports.get(name)
        old = listen_port(name, svc)
        env = svc.get("environment") or {}
        new_env = {
            k: point_at(str(v), ports) for k, v in env.items() if point_at(str(v), ports) != v
        }
        health = svc.get("healthcheck")
        if name == "redis":
            out["image"] = images["redis"]
            out["command"] = [*svc["command"], "--port", str(port), "--bind", "127.0.0.1"]
            out["healthcheck"] = {"test": ["CMD", "redis-cli", "-p", str(port), "ping"]}
        elif name == "postgres":
            out["image"] = images["postgres"]
            # The server and pg_isready (the health check) both read PGPORT.
            new_env |= {"PGPORT": str(port), "POSTGRES_LISTEN_ADDRESSES": "127.0.0.1"}
        elif name == "lb":
            out["image"] = images["haproxy"]
            out["volumes"] = [f"{haproxy_cfg}:{HAPROXY_TARGET}:ro"]
        if str(svc.get("image", "")).startswith("roomstream"):
            new_env["ROOMSTREAM_JWT_SECRET"] = jwt_secret
            if port is not None:
                new_env |= {"ROOMSTREAM_HOST": "127.0.0.1", "ROOMSTREAM_PORT": str(port)}
            if "ROOMSTREAM_ADVERTISE_HOST" in env:
                new_env["ROOMSTREAM_ADVERTISE_HOST"] = "127.0.0.1"
            if "ROOMSTREAM_ALLOWED_ORIGINS" in env:
                new_env["ROOMSTREAM_ALLOWED_ORIGINS"] = (
                    f"http://127.0.0.1:{lb_port},http://localhost:{lb_port}"
                )
        if health and "test" not in out.get("healthcheck", {}):
            test = health["test"]
            out["healthcheck"] = {
                "test": probe_port(test, old, port) if old and port else test,
            }
        if health:
            out["healthcheck"]["interval"] = HEALTH_INTERVAL
        if new_env:
            out["environment"] = new_env
        nofile = (svc.get("ulimits") or {}).get("nofile")
        if isinstance(nofile, dict) and max(nofile.values()) > nofile_hard_limit:
            out["ulimits"] = {
                "nofile": {k: min(int(v), nofile_hard_limit) for k, v in nofile.items()}
            }
        services[name] = out
    version = {"version": config["version"]} if "version" in config else {}
    return {**version, "services": services}


def haproxy_config(production_cfg: str, ports: dict[str, int]) -> str:
    """deploy/haproxy.cfg with only its addresses changed: 127.0.0.1 ports of the gateways."""
    gateways = sorted(n for n in ports if n.startswith("gateway-"))
    return render_haproxy(
        production_cfg, f"127.0.0.1:{ports['lb']}", [f"127.0.0.1:{ports[g]}" for g in gateways]
    )
