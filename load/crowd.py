"""A crowd of users that honours Retry-After, against a running service on loopback.

    python load/crowd.py --url http://127.0.0.1:8080 [--users 4000] [--duration 20]
                         [--warmup 3] [--items 100000] [--timeout 5]

Every user is a greenlet with a keep-alive connection of its own. It checks out a random item
under its own user id, again and again; when the answer is 503 with Retry-After it waits that
long (times a random 1.0-1.5, so the crowd does not come back in one wave) before its next
try. All users start at once, as a sale's crowd does. Prints one JSON line: answers by status
and error code, the decided answers (anything but `overloaded`) per second, their latency
percentiles, timeouts and connection errors, for the answers that arrive after --warmup
seconds; and the answers by outcome over the whole run, to set against the attempt rows.

Raw sockets, not an HTTP library: the client shares the machine's two cores with the server,
so it spends as little as it can per request.
"""

from gevent import monkey

monkey.patch_all()

# ruff: noqa: E402 - the imports below must see the patched socket module
import argparse
import json
import random
import re
import socket
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

import gevent

_CODE = re.compile(rb'"code":"([a-z_]+)"')
_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")
_RETRY = re.compile(rb"(?i)\r\nretry-after: *(\d+)")


class Tally:
    def __init__(self, warmup_until: float, stop_at: float):
        self.warmup_until, self.stop_at = warmup_until, stop_at
        self.by_outcome: Counter[str] = Counter()  # the whole run, for the attempt rows
        self.measured: Counter[str] = Counter()  # after the warmup
        self.decided_latency: list[float] = []
        self.shed_latency: list[float] = []
        self.per_second: Counter[int] = Counter()
        self.timeouts = self.connect_errors = self.resets = 0

    def answer(self, outcome: str, started: float, took: float) -> None:
        """Answers count by the moment they arrive: a throughput over the measured seconds."""
        self.by_outcome[outcome] += 1
        done = started + took
        if not self.warmup_until <= done < self.stop_at:
            return
        self.measured[outcome] += 1
        if outcome == "overloaded":
            self.shed_latency.append(took)
        else:
            self.decided_latency.append(took)
            self.per_second[int(done - self.warmup_until)] += 1


def read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, bytes, int | None]:
    """(status, error code or b'', Retry-After) of the next response; ConnectionError if the
    server closed first."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end])
    match = _LENGTH.search(head)
    length = int(match.group(1)) if match else 0
    while len(buffer) < end + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk
    body = bytes(buffer[end : end + length])
    del buffer[: end + length]
    status = int(head[9:12])
    code = _CODE.search(body) if status >= 400 else None
    retry = _RETRY.search(head)
    return status, code.group(1) if code else b"", int(retry.group(1)) if retry else None


def user(number: int, host: str, port: int, args: argparse.Namespace, tally: Tally) -> None:
    rng = random.Random(number)
    sock: socket.socket | None = None
    buffer = bytearray()
    while time.monotonic() < tally.stop_at:
        if sock is None:
            try:
                sock = socket.create_connection((host, port), timeout=args.timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                tally.connect_errors += 1
                sock = None
                gevent.sleep(rng.uniform(0.5, 1.0))
                continue
            buffer.clear()
        item = rng.randint(1, args.items)
        request = (
            f"POST /checkout?user_id=c{number}&id={item} HTTP/1.1\r\n"
            f"Host: {host}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        started = time.monotonic()
        try:
            sock.sendall(request)
            status, code, retry_after = read_response(sock, buffer)
        except TimeoutError:
            tally.timeouts += 1
            sock.close()
            sock = None
            continue
        except OSError:  # reset, or closed by the server
            tally.resets += 1
            sock.close()
            sock = None
            continue
        took = time.monotonic() - started
        outcome = code.decode() if code else ("ok" if status == 200 else str(status))
        tally.answer(outcome, started, took)
        if status == 503 and retry_after:
            gevent.sleep(retry_after * rng.uniform(1.0, 1.5))
    if sock is not None:
        sock.close()


def percentiles(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)

    def at(p: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 1)

    return {str(p): at(p) for p in (50, 90, 99, 99.9)} | {
        "max": round(ordered[-1] * 1000, 1) if ordered else None
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--duration", type=float, default=20, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=3, help="seconds not measured, first")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=5, help="seconds for an answer")
    args = parser.parse_args(argv)
    url = urlsplit(args.url)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("the crowd runs against loopback only")
    duration = min(max(args.duration, 1), 300)  # bounded, whatever was asked
    start = time.monotonic()
    tally = Tally(start + args.warmup, start + args.warmup + duration)
    crowd = [
        gevent.spawn(user, n, url.hostname, url.port or 80, args, tally) for n in range(args.users)
    ]
    gevent.joinall(crowd, timeout=args.warmup + duration + args.timeout + 5)
    gevent.killall(crowd, timeout=5)
    decided = sum(n for outcome, n in tally.measured.items() if outcome != "overloaded")
    seconds = [tally.per_second.get(s, 0) for s in range(int(duration))]
    print(
        json.dumps(
            {
                "users": args.users,
                "duration": duration,
                "warmup": args.warmup,
                "measured": dict(tally.measured),
                "by_outcome": dict(tally.by_outcome),
                "decided_per_second": round(decided / duration, 1),
                "decided_each_second": seconds,
                "decided_latency_ms": percentiles(tally.decided_latency),
                "shed_latency_ms": percentiles(tally.shed_latency),
                "shed_share": round(
                    tally.measured["overloaded"] / max(1, sum(tally.measured.values())), 3
                ),
                "timeouts": tally.timeouts,
                "resets": tally.resets,
                "connect_errors": tally.connect_errors,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
