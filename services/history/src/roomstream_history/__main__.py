"""Entry point: `roomstream-history` / `python -m roomstream_history`."""

from __future__ import annotations

from roomstream_kit.logs import setup_logging
from roomstream_kit.serve import run_asgi
from roomstream_kit.telemetry import setup_telemetry

from .app import create_app
from .settings import HistorySettings


def main() -> None:
    settings = HistorySettings()
    node = settings.node_name("history")
    setup_logging("history", node, settings.log_level, settings.log_format)
    setup_telemetry("history", node)
    run_asgi(create_app(settings), settings.host, settings.port)


if __name__ == "__main__":
    main()
