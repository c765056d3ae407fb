"""`roomstream schema`: export the JSON Schemas of every frame and event."""

from __future__ import annotations

import argparse
from pathlib import Path

from roomstream_contracts.schema import export_schemas


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "schema",
        help="write the JSON Schemas of frames and events",
        description="Write the JSON Schema of every client frame, server frame and event.",
    )
    p.add_argument("--out", type=Path, default=Path("docs/schema"), help="folder (docs/schema)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for path in export_schemas(args.out):
        print(path)
    return 0
