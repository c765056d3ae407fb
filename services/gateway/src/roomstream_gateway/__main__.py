"""Entry point: `python -m roomstream_gateway` / `roomstream-gateway`."""

from __future__ import annotations

from roomstream_kit.serve import run_loop

from .app import main_async


def main() -> None:
    run_loop(main_async())


if __name__ == "__main__":
    main()
