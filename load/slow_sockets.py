"""Slow sockets from one address: each sends half a request line and then nothing, and opens
again when the server closes it. Loopback only, bounded in count and time.

    python load/slow_sockets.py --url http://127.0.0.1:8080 [--sockets 3200]
                                [--source 127.0.0.1] [--duration 30] [--reopen-after 0.5]

Prints one JSON line: connections opened, how long the server let them hang (percentiles),
how many it closed at once (a per-address cap) and how many were still open at the end.
"""

from gevent import monkey

monkey.patch_all()

# ruff: noqa: E402 - the imports below must see the patched socket module
import argparse
import json
import socket
import sys
import time
from urllib.parse import urlsplit

import gevent


def hold(host: str, port: int, args: argparse.Namespace, stop_at: float, tally: dict) -> None:
    while time.monotonic() < stop_at:
        try:
            sock = socket.create_connection(
                (host, port), timeout=10, source_address=(args.source, 0)
            )
        except OSError:
            tally["connect_errors"] += 1
            gevent.sleep(args.reopen_after)
            continue
        tally["opened"] += 1
        opened = time.monotonic()
        try:
            sock.sendall(b"GET /sale/sta")  # half a request line, then nothing
            sock.settimeout(max(0.1, stop_at - opened))
            data = sock.recv(1024)
        except TimeoutError:
            tally["open_at_end"] += 1
            sock.close()
            return
        except OSError:
            data = b""
        held = time.monotonic() - opened
        sock.close()
        tally["answered" if data else "closed"] += 1
        tally["held"].append(held)
        gevent.sleep(args.reopen_after)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--sockets", type=int, default=3200)
    parser.add_argument("--source", default="127.0.0.1", help="a loopback address to come from")
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--reopen-after", type=float, default=0.5)
    args = parser.parse_args(argv)
    url = urlsplit(args.url)
    if url.hostname != "127.0.0.1" or not args.source.startswith("127."):
        raise SystemExit("slow sockets go from and to loopback only")
    args.sockets = min(args.sockets, 10_000)
    stop_at = time.monotonic() + min(args.duration, 300)
    tally: dict = {
        "opened": 0,
        "closed": 0,
        "answered": 0,
        "open_at_end": 0,
        "connect_errors": 0,
        "held": [],
    }
    workers = [
        gevent.spawn(hold, url.hostname, url.port, args, stop_at, tally)
        for _ in range(args.sockets)
    ]
    gevent.joinall(workers, timeout=args.duration + 20)
    gevent.killall(workers, timeout=5)
    held = sorted(tally.pop("held"))

    def at(p: float) -> float | None:
        return round(held[min(len(held) - 1, int(p / 100 * len(held)))], 2) if held else None

    tally["held_seconds"] = {"p50": at(50), "p99": at(99), "max": held[-1] if held else None}
    tally["closed_within_1s"] = sum(1 for h in held if h < 1)
    print(json.dumps(tally))
    return 0


if __name__ == "__main__":
    sys.exit(main())
