"""`roomstream up`: the whole system on this machine, stopped cleanly by Ctrl-C or SIGTERM.

Modules: `plan` (ports, environment: pure), `deps` (Redis / PostgreSQL), `children` (child
processes). The order: check every port, resolve or start Redis and PostgreSQL, start rooms,
history and monitor, then the gateways, wait for each `/readyz`, create the room `general`, print
where everything listens, wait for a signal, stop everything. Any failure stops what was started
and exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import redis.asyncio as aioredis

from ..common import env_database_url, env_namespace, env_redis_url, jwt_secret, stream_keys
from ..rooms import RoomsApiUnavailable, create_room_api, create_room_direct
from .children import Child, ChildFailed, stop_all
from .deps import DependencyError, EmbeddedPostgres, resolve_postgres, resolve_redis
from .plan import Plan, Ports, ServiceSpec, taken_ports

EXIT_PORT_TAKEN = 3
EXIT_DEPENDENCY = 4
EXIT_SERVICE = 5


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "up",
        help="run the whole system locally (Ctrl-C stops it)",
        description="Start Redis and PostgreSQL (unless they answer), two gateways, rooms, "
        "history, monitor and hooks; create the room `general`; stop everything on Ctrl-C / SIGTERM.",
    )
    p.add_argument("--gateways", type=int, default=2, help="number of gateways (2)")
    p.add_argument("--port-base", type=int, help="gateways at BASE.., rooms BASE+100, etc.")
    p.add_argument("--gateway-port", type=int, default=8000, help="first gateway port (8000)")
    p.add_argument("--rooms-port", type=int, default=8100)
    p.add_argument("--history-port", type=int, default=8200)
    p.add_argument("--monitor-port", type=int, default=8300)
    p.add_argument("--hooks-port", type=int, default=8400)
    p.add_argument("--redis-url", default=env_redis_url(), help="default: REDIS_URL")
    p.add_argument(
        "--database-url",
        default=env_database_url(),
        help="default: DATABASE_URL",
    )
    p.add_argument("--redis-port", type=int, default=16379, help="port of an embedded Redis")
    p.add_argument("--postgres-port", type=int, default=15432, help="port of an embedded Postgres")
    p.add_argument(
        "--embedded",
        action="store_true",
        help="start Redis and PostgreSQL under the data folder even if local servers answer",
    )
    p.add_argument("--namespace", default=env_namespace(), help="Redis key prefix (rs)")
    p.add_argument(
        "--data-dir", type=Path, default=Path(".roomstream"), help="data and logs (.roomstream)"
    )
    p.add_argument("--ready-timeout", type=float, default=60.0, help="seconds per service")
    p.add_argument("--verbose", "-v", action="store_true", help="stream the services' logs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvloop

        return uvloop.run(_up(args))
    except ImportError:  # pragma: no cover
        return asyncio.run(_up(args))


def _say(line: str) -> None:
    print(line, flush=True)


def _err(line: str) -> None:
    print(f"roomstream up: {line}", file=sys.stderr, flush=True)


async def _up(args: argparse.Namespace) -> int:
    if args.gateways < 1:
        _err("--gateways must be at least 1")
        return 2
    if args.port_base is not None:
        ports = Ports.from_base(args.port_base, args.gateways)
    else:
        ports = Ports(
            [args.gateway_port + i for i in range(args.gateways)],
            args.rooms_port,
            args.history_port,
            args.monitor_port,
            args.hooks_port,
        )
    plan = Plan(ports)
    data_dir: Path = args.data_dir.resolve()
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)

    # 1. Every port before anything starts: nothing is left running when one is taken.
    needed = [(s.name, s.port) for s in plan.services]
    if not args.redis_url:
        needed.append(("redis (embedded, if needed)", args.redis_port))
    if not args.database_url:
        needed.append(("postgres (embedded, if needed)", args.postgres_port))
    if not args.embedded:
        needed = [(n, p) for n, p in needed if not n.endswith("if needed)")]
    taken = taken_ports(plan.host, needed)
    if taken:
        for name, port in taken:
            _err(f"port {port} is taken (needed by {name})")
        return EXIT_PORT_TAKEN

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    deps: list[Child] = []
    services: list[Child] = []
    embedded_pg: EmbeddedPostgres | None = None
    try:
        # 2. Redis and PostgreSQL.
        try:
            local = not args.embedded
            redis_dep = await resolve_redis(
                args.redis_url, data_dir, args.redis_port, deps, args.verbose, try_local=local
            )
            pg_dep, embedded_pg = await resolve_postgres(
                args.database_url, data_dir, args.postgres_port, try_local=local
            )
        except DependencyError as exc:
            _err(str(exc))
            return EXIT_DEPENDENCY
        _say(f"redis     {redis_dep.url} ({redis_dep.source})")
        _say(f"postgres  {pg_dep.url} ({pg_dep.source})")

        # 3. Services, each waited for before the next (gateways call rooms and history).
        secret = jwt_secret()
        running: list[ServiceSpec] = []
        missing: list[str] = []
        for spec in plan.services:
            env = plan.env(
                spec,
                redis_url=redis_dep.url,
                database_url=pg_dep.url,
                namespace=args.namespace,
                jwt_secret=secret,
            )
            child = Child(
                spec.name,
                [sys.executable, "-m", spec.module],
                env,
                data_dir / "logs" / f"{spec.name}.log",
                verbose=args.verbose,
            )
            services.append(child)
            await child.start()
            try:
                await child.wait_http_ready(f"{spec.url}/readyz", args.ready_timeout)
            except ChildFailed as exc:
                if spec.required:
                    _err(f"{exc} (log: {child.log_path})")
                    return EXIT_SERVICE
                _err(f"{exc} — continuing without {spec.kind} (log: {child.log_path})")
                missing.append(spec.kind)
                await child.stop(5)
                continue
            running.append(spec)
            if stop.is_set():
                return 0

        # 4. The public room `general`.
        await _create_general(plan, redis_dep.url, args.namespace, "rooms" in missing)

        # 5. Where everything is.
        _say("")
        for spec in running:
            extra = f"  ws://127.0.0.1:{spec.port}/ws" if spec.kind == "gateway" else ""
            _say(f"{spec.name:<10} http://127.0.0.1:{spec.port}{extra}")
        for kind in missing:
            _say(f"{kind + '-1':<10} not running (see above)")
        _say("")
        pages = " and ".join(f"http://127.0.0.1:{p}/" for p in ports.gateways)
        _say(f"chat page: {pages} (open two tabs, one per gateway)")
        if "monitor" not in missing:
            _say(f"dashboard: http://127.0.0.1:{ports.monitor}/")
        _say(f"logs:      {data_dir / 'logs'}")
        _say("roomstream is up; Ctrl-C stops it.")

        # 6. Run until a signal; report children that die meanwhile.
        await _watch(services, stop)
        _say("stopping ...")
        return 0
    finally:
        await stop_all(services)
        await stop_all(deps)
        if embedded_pg is not None:
            await asyncio.to_thread(embedded_pg.stop)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _watch(children: list[Child], stop: asyncio.Event) -> None:
    reported: set[str] = set()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        for child in children:
            if child.proc is not None and not child.running and child.name not in reported:
                reported.add(child.name)
                _err(
                    f"{child.name} exited with code {child.proc.returncode} (log: {child.log_path})"
                )


async def _create_general(plan: Plan, redis_url: str, namespace: str, no_rooms: bool) -> None:
    rooms_url = plan.by_kind("rooms")[0].url
    if not no_rooms:
        try:
            created = await create_room_api(rooms_url, "general", "General")
            _say("room      general " + ("created" if created else "exists"))
            return
        except RoomsApiUnavailable as exc:
            _err(f"rooms API unavailable ({exc}); creating `general` directly in the log")
    redis = aioredis.Redis.from_url(redis_url)
    try:
        created = await create_room_direct(redis, stream_keys(namespace), "general", "General")
        _say("room      general " + ("created (direct)" if created else "exists"))
    finally:
        await redis.aclose()
