"""Entry point: `python -m roomstream_monitor` / `roomstream-monitor`."""

from __future__ import annotations

from roomstream_kit.serve import serve_service

from .app import KIND, create_app
from .settings import MonitorSettings


def main() -> None:
    serve_service(KIND, MonitorSettings(), create_app)


if __name__ == "__main__":
    main()
