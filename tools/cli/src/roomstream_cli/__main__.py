"""Entry point of the `roomstream` command: `up`, `token`, `schema`, `bench`, `bench-routing`, `dead-letters`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import deadletters_cmd, schema_cmd, token_cmd, up
from .bench.command import add_parser as add_bench_parser
from .bench.connects import add_parsers as add_connects_parsers
from .bench.routing import add_parser as add_bench_routing_parser


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="roomstream",
        description="roomstream: run the system locally, mint development tokens, export "
        "schemas, benchmark the gateways.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up.add_parser(sub)
    token_cmd.add_parser(sub)
    schema_cmd.add_parser(sub)
    add_bench_parser(sub)
    add_bench_routing_parser(sub)
    add_connects_parsers(sub)
    deadletters_cmd.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    code: int = args.func(args)
    sys.exit(code)


if __name__ == "__main__":
    main()
