"""Entry point: `roomstream-hooks` / `python -m roomstream_hooks`."""

from __future__ import annotations

from roomstream_kit.serve import serve_service

from .app import create_app
from .settings import HooksSettings


def main() -> None:
    serve_service("hooks", HooksSettings(), create_app)


if __name__ == "__main__":
    main()
