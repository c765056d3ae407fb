"""Entry point: `python -m roomstream_rooms` / `roomstream-rooms` [serve | rebuild]."""

from __future__ import annotations

import argparse
import sys

import orjson
from roomstream_kit.auth import refuse_insecure_secret
from roomstream_kit.logs import setup_logging
from roomstream_kit.serve import run_asgi, run_loop
from roomstream_kit.telemetry import setup_telemetry, shutdown_telemetry

from .settings import RoomsSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="roomstream-rooms", description="roomstream rooms service"
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "rebuild"],
        help="serve the API and consume the log (default), or rebuild the projections from the log",
    )
    args = parser.parse_args(argv)
    settings = RoomsSettings()
    node = settings.node_name("rooms")
    setup_logging("rooms", node, settings.log_level, settings.log_format)
    setup_telemetry("rooms", node)
    if args.command == "rebuild":
        from .rebuild import rebuild

        result: dict[str, object] = {}

        async def run() -> None:
            result.update(await rebuild(settings))

        try:
            run_loop(run())
        finally:
            shutdown_telemetry()
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
        return
    from .app import create_app

    refuse_insecure_secret(settings, "rooms")
    try:
        run_asgi(create_app(settings), settings.host, settings.port)
    finally:
        shutdown_telemetry()  # flush the spans not exported yet


if __name__ == "__main__":
    main()
