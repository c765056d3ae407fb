"""Entry point of the `roomstream` command (placeholder)."""

from __future__ import annotations


def main() -> None:
    raise SystemExit("not implemented yet")


if __name__ == "__main__":
    main()
