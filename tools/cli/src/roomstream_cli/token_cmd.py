"""`roomstream token USER`: print a development JWT."""

from __future__ import annotations

import argparse

from .common import token


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "token",
        help="print a development JWT for a user",
        description="Print an HS256 JWT for USER, signed with ROOMSTREAM_JWT_SECRET "
        "(or the development secret).",
    )
    p.add_argument("user", help="the user id (the token's `sub`)")
    p.add_argument("--ttl", type=float, default=24 * 3600, help="lifetime in seconds (24 h)")
    p.add_argument("--role", choices=["service"], help="`service`: may do anything in the APIs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.user.strip():
        raise SystemExit("roomstream token: the user id must not be empty")
    print(token(args.user, ttl_s=args.ttl, role=args.role))
    return 0
