"""Entry point: `roomstream-history` / `python -m roomstream_history`."""

from __future__ import annotations

from roomstream_kit.auth import refuse_insecure_secret
from roomstream_kit.logs import setup_logging
from roomstream_kit.serve import run_asgi
from roomstream_kit.telemetry import setup_telemetry

from .app import create_app, tune_gc
from .settings import HistorySettings


def main() -> None:
    settings = HistorySettings()
    refuse_insecure_secret(settings, "history")
    node = settings.node_name("history")
    setup_logging("history", node, settings.log_level, settings.log_format)
    setup_telemetry("history", node)
    app = create_app(settings)
    tune_gc()
    run_asgi(app, settings.host, settings.port)


if __name__ == "__main__":
    main()
