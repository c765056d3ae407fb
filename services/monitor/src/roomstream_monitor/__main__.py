"""Entry point: `python -m roomstream_monitor` / `roomstream-monitor`."""

from __future__ import annotations

from roomstream_kit.auth import refuse_insecure_secret
from roomstream_kit.logs import setup_logging
from roomstream_kit.serve import run_asgi
from roomstream_kit.telemetry import setup_telemetry, shutdown_telemetry

from .app import KIND, create_app
from .settings import MonitorSettings


def main() -> None:
    settings = MonitorSettings()
    refuse_insecure_secret(settings, "monitor")
    node = settings.node_name(KIND)
    setup_logging("monitor", node, settings.log_level, settings.log_format)
    setup_telemetry("monitor", node)
    try:
        run_asgi(create_app(settings), settings.host, settings.port)
    finally:
        shutdown_telemetry()  # flush the spans not exported yet


if __name__ == "__main__":
    main()
