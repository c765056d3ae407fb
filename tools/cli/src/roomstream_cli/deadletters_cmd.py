"""`roomstream dead-letters list | replay`: inspect and replay the log entries consumer groups
dead-lettered (docs/operations.md, "Dead letters"). Reads the deployment's settings from the
environment (`REDIS_URL`, `ROOMSTREAM_NAMESPACE`, `ROOMSTREAM_SHARDS`, like the services)."""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson
from roomstream_kit import deadletters
from roomstream_kit.redis import connect

from .common import settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "dead-letters",
        help="list or replay dead-lettered log entries",
        description="List the log entries consumer groups could not handle (one JSON object "
        "per line), or append them again to their shard once the cause is fixed.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="print every dead letter as a JSON line")
    ls.add_argument("--group", help="only this consumer group's")
    ls.set_defaults(func=run_list)
    rp = actions.add_parser("replay", help="append dead-lettered entries to their shard again")
    rp.add_argument("ids", nargs="*", help="dead-letter ids (from `list`); none: all")
    rp.add_argument("--group", help="only this consumer group's")
    rp.add_argument("--keep", action="store_true", help="keep the dead letters after replaying")
    rp.set_defaults(func=run_replay)


def run_list(args: argparse.Namespace) -> int:
    async def go() -> None:
        s = settings()
        redis = connect(s)
        try:
            for letter in await deadletters.read_all(redis, s.keys, args.group):
                sys.stdout.write(orjson.dumps(letter.view()).decode() + "\n")
        finally:
            await redis.aclose()

    asyncio.run(go())
    return 0


def run_replay(args: argparse.Namespace) -> int:
    async def go() -> int:
        s = settings()
        redis = connect(s)
        try:
            letters = await deadletters.read_all(redis, s.keys, args.group)
            if args.ids:
                wanted = set(args.ids)
                letters = [d for d in letters if d.id in wanted]
                missing = wanted - {d.id for d in letters}
                if missing:
                    sys.stderr.write(f"no such dead letters: {sorted(missing)}\n")
                    return 1
            # The same entry dead-lettered by several groups is appended once.
            seen: set[tuple[str, str]] = set()
            for letter in letters:
                if (letter.stream, letter.entry) in seen:
                    if not args.keep:
                        await redis.xdel(letter.key, letter.id)
                    continue
                seen.add((letter.stream, letter.entry))
                new_id = await deadletters.replay(redis, letter, delete=not args.keep)
                out = {"id": letter.id, "stream": letter.stream, "new_entry": new_id}
                sys.stdout.write(orjson.dumps(out).decode() + "\n")
            return 0
        finally:
            await redis.aclose()

    return asyncio.run(go())
