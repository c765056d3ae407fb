"""Entry point: `roomstream-gateway` (placeholder until the service is filled in)."""

from __future__ import annotations


def main() -> None:
    raise SystemExit("roomstream-gateway is not implemented yet")


if __name__ == "__main__":
    main()
