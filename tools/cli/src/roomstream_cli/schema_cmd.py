"""`roomstream schema`: export the JSON Schemas of every frame and event, and the log's AsyncAPI
document."""

from __future__ import annotations

import argparse
from pathlib import Path

from roomstream_contracts.asyncapi import export_asyncapi
from roomstream_contracts.schema import export_schemas

DEFAULT_OUT = Path("docs/schema")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "schema",
        help="write the JSON Schemas of frames and events",
        description="Write the JSON Schema of every client frame, server frame and event.",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder (docs/schema)")
    p.add_argument(
        "--asyncapi",
        type=Path,
        help="the log's AsyncAPI document (docs/asyncapi.yaml when --out is the default)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for path in export_schemas(args.out):
        print(path)
    target = args.asyncapi
    if target is None and args.out == DEFAULT_OUT:
        target = Path("docs/asyncapi.yaml")
    if target is not None:
        print(export_asyncapi(target))
    return 0
