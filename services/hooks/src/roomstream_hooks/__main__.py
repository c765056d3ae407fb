"""Entry point: `roomstream-hooks` / `python -m roomstream_hooks`."""

from __future__ import annotations

from roomstream_kit.auth import refuse_insecure_secret
from roomstream_kit.logs import setup_logging
from roomstream_kit.serve import run_asgi
from roomstream_kit.telemetry import setup_telemetry

from .app import create_app
from .settings import HooksSettings


def main() -> None:
    settings = HooksSettings()
    refuse_insecure_secret(settings, "hooks")
    node = settings.node_name("hooks")
    setup_logging("hooks", node, settings.log_level, settings.log_format)
    setup_telemetry("hooks", node)
    app = create_app(settings)
    run_asgi(app, settings.host, settings.port)


if __name__ == "__main__":
    main()
