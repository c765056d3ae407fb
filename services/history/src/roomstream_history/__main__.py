"""Entry point: `roomstream-history` / `python -m roomstream_history`."""

from __future__ import annotations

from roomstream_kit.serve import serve_service

from .app import create_app, tune_gc
from .settings import HistorySettings


def main() -> None:
    serve_service("history", HistorySettings(), create_app, before_serve=tune_gc)


if __name__ == "__main__":
    main()
