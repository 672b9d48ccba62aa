"""The `flashsale` console script: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def _add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dev", help="run everything on this machine (embedded Redis/PostgreSQL if unset)"
    )
    p.add_argument("--host", help="address to listen on (default: HOST, else 127.0.0.1)")
    sub.add_parser("serve", help="serve HTTP under gunicorn with gevent workers")
    sub.add_parser("migrate", help="apply the SQL migrations; safe to run again")
    p = sub.add_parser(
        "open-sale", help="open the sale of the period containing --at (default now)"
    )
    p.add_argument("--at", help="an RFC 3339 instant inside the period to open")
    p.add_argument("--next", action="store_true", help="also pre-load the next period's sale")
    p = sub.add_parser(
        "sweep",
        help="restore a lost sale, reclaim expired reservations, settle purchases, drain the"
        " checkout attempts into PostgreSQL, close ended sales",
    )
    p.add_argument("--max-batches", type=int, default=100, help="bound on outbox batches per run")
    p.add_argument(
        "--every",
        type=float,
        metavar="SECONDS",
        help="sweep again every SECONDS until SIGTERM (what each pod's sweeper runs)",
    )
    p = sub.add_parser(
        "prune", help="drop the checkout-attempt partitions (whole days) older than --older-than"
    )
    p.add_argument(
        "--older-than", type=int, required=True, metavar="DAYS", help="days to keep (>= 1)"
    )
    p = sub.add_parser("audit", help="compare Redis with PostgreSQL for a sale")
    p.add_argument("--sale", help="sale id (default: the current or most recent sale)")
    p = sub.add_parser(
        "crowd", help="a demo crowd of shoppers at a running service (default: `flashsale dev`)"
    )
    p.add_argument("--users", type=int, default=500, help="shoppers (default 500)")
    p.add_argument(
        "--duration", type=float, default=60.0, metavar="SECONDS", help="how long (default 60)"
    )
    p.add_argument("--url", help="the service (default http://127.0.0.1:PORT, PORT from the env)")
    p.add_argument(
        "--abandon",
        type=float,
        default=0.3,
        metavar="P",
        help="share of reservations never bought (default 0.3)",
    )
    p.add_argument("--limit", type=int, default=10, help="items per user at most (default 10)")
    p.add_argument("--connections", type=int, default=32, help="connections (default 32)")
    from flashsale import kube

    kube.register(sub)


def _handler(name: str) -> Callable[[argparse.Namespace], int]:
    # Imported lazily so `flashsale --help` and light commands stay fast.
    from flashsale import commands

    return getattr(commands, name.replace("-", "_"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashsale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_commands(sub)
    args = parser.parse_args(argv)
    from flashsale.config import ConfigError

    try:
        handler = getattr(args, "handler", None) or _handler(args.command)
        return handler(args)
    except ConfigError as exc:
        print(f"flashsale: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
