"""Offline validation of the container deployment (tests/deploy/test_compose_up.py runs it).

`docker-compose config` (Debian's docker-compose validates against the Compose JSON schema and
resolves interpolation without an engine); then every service, command, port, environment
variable and health check that compose.yaml, the Dockerfile, deploy/haproxy.cfg and
deploy/prometheus.yml name is checked against the code: every path they request is looked up in
the route table of that service's app, built and started (tests/deploy/routes.py).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import re
import secrets
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from roomstream_kit.settings import CommonSettings

from tests.conftest import JWT_SECRET
from tests.deploy.lb import HAPROXY_CFG, address_lines, render_haproxy, strip_addresses
from tests.deploy.routes import ServiceRoutes

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
PROMETHEUS_YML = REPO / "deploy" / "prometheus.yml"
SERVICE_KINDS = ("gateway", "rooms", "history", "monitor", "hooks")


def _docker_compose(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed (scripts/ensure-services.sh installs it)"
    return subprocess.run(
        [binary, "-f", str(COMPOSE), "--profile", "observability", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        # compose.yaml requires a secret (the services refuse the development one).
        env={**os.environ, "ROOMSTREAM_JWT_SECRET": JWT_SECRET},
    )


@cache
def resolved() -> dict[str, Any]:
    """compose.yaml as docker-compose resolves it (anchors merged, variables interpolated)."""
    result = _docker_compose("config")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@cache
def console_scripts() -> dict[str, str]:
    """Every console script the installed roomstream packages provide: name → `module:function`
    (their installed entry points, not their pyproject text)."""
    scripts: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        if not (dist.metadata["Name"] or "").startswith("roomstream-"):
            continue
        for ep in dist.entry_points.select(group="console_scripts"):
            scripts[ep.name] = ep.value
    return scripts


def settings_class(package: str) -> type[CommonSettings]:
    """The one `CommonSettings` subclass of `package.settings` (the kit's base for scripts)."""
    module = importlib.import_module(f"{package}.settings")
    found = [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, CommonSettings)
        and cls is not CommonSettings
        and cls.__module__ == module.__name__
    ]
    assert len(found) == 1, f"{package}.settings should define one settings class: {found}"
    return found[0]


def env_names(cls: type[CommonSettings]) -> set[str]:
    """Every environment variable a settings class reads."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        choices = getattr(alias, "choices", None)
        if choices:
            names.update(str(c).upper() for c in choices)
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def roomstream_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in resolved()["services"].items()
        if str(svc.get("image", "")).startswith("roomstream")
    }


def kind_of(service: dict[str, Any]) -> str | None:
    """`gateway` for a service running `roomstream-gateway`, etc.; None for other commands."""
    command = service.get("command") or ["roomstream-gateway"]  # the image's CMD
    script = command[0]
    return script.removeprefix("roomstream-") if script.startswith("roomstream-") else None


def healthcheck_url(service: dict[str, Any]) -> str:
    test = " ".join(service["healthcheck"]["test"])
    m = re.search(r"https?://[^'\" ]+", test)
    assert m, f"no URL in health check {test!r}"
    return m.group(0)


def haproxy_check_path(config: str) -> str:
    """The path of the balancer's health check of the gateways (`http-check send ... uri`)."""
    check = re.search(r"http-check send meth GET uri (\S+)", config)
    assert check, "no http-check in deploy/haproxy.cfg"
    return check.group(1)


def prometheus_jobs() -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"]
    return jobs


def named_paths() -> set[tuple[str, str]]:
    """Every (service kind, path) the deployment files make a request to or publish."""
    paths: set[tuple[str, str]] = set()
    services = roomstream_services()
    for svc in services.values():
        if kind := kind_of(svc):
            paths.add((kind, urlsplit(healthcheck_url(svc)).path))  # compose health checks
    for job in prometheus_jobs():  # Prometheus scrapes
        for sc in job["static_configs"]:
            for target in sc["targets"]:
                scraped = services.get(target.split(":")[0])
                if scraped is not None and (kind := kind_of(scraped)):
                    paths.add((kind, job.get("metrics_path", "/metrics")))
    # The balancer: its health check, and what it fronts (the WebSocket and the chat page).
    paths |= {("gateway", haproxy_check_path(HAPROXY_CFG.read_text())), ("gateway", "/ws")}
    paths |= {("gateway", "/"), ("monitor", "/")}  # the pages on the published ports
    return paths


@pytest.fixture
def service_routes(monkeypatch: pytest.MonkeyPatch) -> ServiceRoutes:
    """Every service's app, built from its settings as its entry point builds it."""
    monkeypatch.setenv("ROOMSTREAM_JWT_SECRET", secrets.token_urlsafe(48))
    settings = {kind: settings_class(f"roomstream_{kind}")() for kind in SERVICE_KINDS}
    return ServiceRoutes(settings)


# -- the file as a whole ---------------------------------------------------------------------


def test_compose_file_is_valid_for_docker_compose() -> None:
    result = _docker_compose("config", "--quiet")
    assert result.returncode == 0, result.stderr
    names = set(resolved()["services"])
    assert {"redis", "postgres", "lb", "rooms", "history", "monitor", "hooks"} <= names
    assert {"otel-collector", "prometheus"} <= names
    for name in ("otel-collector", "prometheus"):
        assert resolved()["services"][name].get("profiles") == ["observability"]


def test_every_service_has_a_health_check() -> None:
    for name, svc in resolved()["services"].items():
        if name == "bootstrap":  # a one-shot job, not a service
            assert svc.get("restart") == "no"
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_state_is_persistent() -> None:
    services = resolved()["services"]
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert redis_cmd[redis_cmd.index("--appendfsync") + 1] == "everysec"
    assert any(str(v).endswith(":/data") or "/data" in str(v) for v in services["redis"]["volumes"])
    assert services["postgres"]["image"].startswith("postgres:15")
    assert any("/var/lib/postgresql/data" in str(v) for v in services["postgres"]["volumes"])


# -- the roomstream services against the code ------------------------------------------------


def test_every_service_kind_runs_and_gateways_are_several() -> None:
    kinds = [kind_of(svc) for svc in roomstream_services().values()]
    for kind in SERVICE_KINDS:
        assert kind in kinds, f"no compose service runs roomstream-{kind}"
    assert kinds.count("gateway") >= 2


def test_commands_are_console_scripts_of_the_workspace() -> None:
    scripts = console_scripts()
    for name, svc in roomstream_services().items():
        command = svc.get("command")
        assert command, f"{name}: give the command explicitly"
        if command[0] == "python":  # the bootstrap job: a file the Dockerfile copies in
            target = command[1]
            dockerfile = (REPO / "Dockerfile").read_text()
            copy = re.search(rf"COPY (\S+) {re.escape(target)}", dockerfile)
            assert copy and (REPO / copy.group(1)).is_file(), f"{name}: {target} not in image"
            continue
        assert command[0] in scripts, f"{name}: {command[0]} is not a console script"
        module_name, _, func = scripts[command[0]].partition(":")
        assert callable(getattr(importlib.import_module(module_name), func))


def test_environment_variables_are_settings_of_that_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, svc in roomstream_services().items():
        kind = kind_of(svc)
        cls = settings_class(f"roomstream_{kind}") if kind else CommonSettings
        known = env_names(cls)
        env: dict[str, str] = {k: str(v) for k, v in svc.get("environment", {}).items()}
        for var in env:
            if var.startswith("OTEL_"):  # the OpenTelemetry SDK's own (roomstream_kit.telemetry)
                continue
            assert var in known, f"{name}: {var} is not a setting of {cls.__name__}"
        # ... and the values are valid for that class
        for var in list(known):
            monkeypatch.delenv(var, raising=False)
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        settings = cls()
        if kind:
            assert settings.port == int(env["ROOMSTREAM_PORT"])
            assert settings.host == "0.0.0.0" or "ROOMSTREAM_HOST" not in env
            assert settings.node_id, f"{name}: a stable ROOMSTREAM_NODE_ID (consumer name)"
        assert settings.shards == 8
        monkeypatch.undo()


def test_node_ids_are_unique() -> None:
    ids = [svc["environment"].get("ROOMSTREAM_NODE_ID") for svc in roomstream_services().values()]
    ids = [i for i in ids if i]
    assert len(ids) == len(set(ids))


def test_health_checks_call_healthz_on_the_service_port() -> None:
    for name, svc in roomstream_services().items():
        kind = kind_of(svc)
        if kind is None:
            continue
        url = healthcheck_url(svc)
        assert url == f"http://127.0.0.1:{svc['environment']['ROOMSTREAM_PORT']}/healthz", name


async def test_every_path_the_deployment_names_is_a_route_of_that_service(
    service_routes: ServiceRoutes,
) -> None:
    paths = named_paths()
    assert {("gateway", "/healthz"), ("rooms", "/healthz"), ("monitor", "/metrics")} <= paths
    for kind, path in sorted(paths):
        assert await service_routes.serves(kind, path), f"roomstream-{kind} does not serve {path}"
    # The check can say no: no service has this route, and the API services have no page at `/`
    # (the old source-text search said history had one, from an `.rstrip("/")`).
    for kind in SERVICE_KINDS:
        assert not await service_routes.serves(kind, "/no-such-route"), kind
    for kind in ("rooms", "history"):
        assert not await service_routes.serves(kind, "/"), kind


def test_published_ports() -> None:
    services = resolved()["services"]
    monitor = services["monitor"]
    assert any(int(p["published"]) == 8300 and int(p["target"]) == 8300 for p in monitor["ports"])
    assert monitor["environment"]["ROOMSTREAM_PORT"] == "8300"
    lb = services["lb"]
    assert any(int(p["published"]) == 8080 and int(p["target"]) == 8080 for p in lb["ports"])
    binds, _ = address_lines(HAPROXY_CFG.read_text())
    assert binds == [":8080"]


# -- the load balancer -----------------------------------------------------------------------


def test_load_balancer_fronts_every_gateway_without_stickiness() -> None:
    config = HAPROXY_CFG.read_text()
    lb = resolved()["services"]["lb"]
    mounts = [str(v["source"] if isinstance(v, dict) else v.split(":")[0]) for v in lb["volumes"]]
    assert any(m.endswith("deploy/haproxy.cfg") for m in mounts)
    gateways = {
        name: svc["environment"]["ROOMSTREAM_PORT"]
        for name, svc in roomstream_services().items()
        if kind_of(svc) == "gateway"
    }
    _, servers = address_lines(config)
    assert sorted(addr for _, addr in servers) == sorted(f"{n}:{p}" for n, p in gateways.items())
    words = [ln.split() for ln in config.splitlines() if ln.strip() and ln.lstrip()[0] != "#"]
    directives = {" ".join(w[:2]) for w in words}
    assert "balance roundrobin" in directives
    for sticky in ("cookie", "stick", "stick-table", "hash-type"):
        assert not any(w[0] == sticky for w in words), f"sticky directive {sticky}"
    assert not any(w[:2] in (["balance", "source"], ["balance", "uri"]) for w in words)
    assert "timeout tunnel" in directives
    assert haproxy_check_path(config) == "/readyz"


def test_rendering_changes_only_addresses(tmp_path: Path) -> None:
    config = HAPROXY_CFG.read_text()
    rendered = render_haproxy(config, "127.0.0.1:1", ["127.0.0.1:2", "127.0.0.1:3"])
    assert strip_addresses(rendered) == strip_addresses(config)
    binds, servers = address_lines(rendered)
    assert binds == ["127.0.0.1:1"]
    assert [addr for _, addr in servers] == ["127.0.0.1:2", "127.0.0.1:3"]
    haproxy = shutil.which("haproxy")
    assert haproxy, "haproxy is not installed (scripts/ensure-services.sh installs it)"
    path = tmp_path / "haproxy.cfg"
    path.write_text(rendered)
    check = subprocess.run([haproxy, "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_prometheus_scrapes_every_roomstream_process() -> None:
    services = resolved()["services"]
    targets = {
        t for job in prometheus_jobs() for sc in job["static_configs"] for t in sc["targets"]
    }
    for name, svc in roomstream_services().items():
        kind = kind_of(svc)
        if kind is None:
            continue
        assert f"{name}:{svc['environment']['ROOMSTREAM_PORT']}" in targets, name
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in prometheus_jobs())
    for target in targets:
        assert target.split(":")[0] in services, target


# -- the image -------------------------------------------------------------------------------


def test_dockerfile() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.MULTILINE)
    assert [s[1] for s in stages] == ["builder", "runtime"]
    # The base image is a build argument (the compose test builds on a local stand-in); production
    # builds get the official python image.
    arg = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert arg and arg.group(1).startswith("python:3.11-slim-bookworm")
    assert [s[0] for s in stages] == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    assert "uv sync --frozen --no-dev --all-packages" in text
    runtime = text.split("AS runtime", 1)[1]
    user = re.search(r"^USER\s+(\S+)", runtime, re.MULTILINE)
    assert user and not user.group(1).startswith(("root", "0"))
    assert "HEALTHCHECK" in runtime and "/healthz" in runtime
    cmd = re.search(r'^CMD \["([^"]+)"\]', runtime, re.MULTILINE)
    assert cmd and cmd.group(1) in console_scripts()
    for kind in SERVICE_KINDS:
        assert f"roomstream-{kind}" in console_scripts()
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
