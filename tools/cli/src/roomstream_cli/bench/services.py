"""The command lines of the service benchmarks: `roomstream bench history …`, `roomstream bench hooks`.

The implementations (`history`, `hooks`) import the services they measure; they are imported
only when run, so every other `roomstream` command starts without loading the services.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

_DOCS = {
    "history": "Benchmarks of the history service (not tests): persist (events/s from a "
    "pre-filled log into Postgres, and the write strategies side by side), replay (events/s "
    "served by the HTTP API paging forward) and reconnect (N clients through two gateways, each "
    "missing M messages beyond the recent buffer). Local Redis and Postgres, a scratch "
    "namespace and database, both removed afterwards. See docs/benchmarks.md.",
    "hooks": "Benchmark of the webhooks service (not a test): events/s delivered by one hooks "
    "process to one local receiver that verifies every signature, on a pre-filled log. Local "
    "Redis and Postgres, a scratch namespace and database. See docs/benchmarks.md.",
}


def _doc(name: str) -> str:
    return _DOCS[name]


def _lazy(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        module = importlib.import_module(f"{__package__}.{name}")
        code: int = module.run(args)
        return code

    return run


def _parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str
) -> argparse.ArgumentParser:
    """`bench NAME`, described by its module's docstring (read without importing it)."""
    return sub.add_parser(
        name,
        help=help,
        description=_doc(name),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_history_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = _parser(sub, "history", "history service: persist, replay, reconnect")
    parser.add_argument(
        "which",
        nargs="*",
        default=["persist", "replay", "reconnect"],
        metavar="persist|replay|reconnect",
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--missed", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1, help="persist: runs (median reported)")
    parser.add_argument(
        "--untraced", action="store_true", help="persist: envelopes without a trace context"
    )
    parser.add_argument(
        "--no-strategies", action="store_true", help="persist: skip the write-strategy comparison"
    )
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="persist: keep CPython's default GC settings (the service process tunes them)",
    )
    parser.add_argument(
        "--export-spans",
        action="store_true",
        help="persist: install a span processor (batching, discarding exporter), as a configured"
        " OTEL_TRACES_EXPORTER does; by default there is none, as in the default configuration",
    )
    parser.set_defaults(func=_lazy("history"))


def add_hooks_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = _parser(sub, "hooks", "webhooks service: events/s delivered to one local receiver")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--batch-max", type=int, default=100)
    parser.set_defaults(func=_lazy("hooks"))
