"""Per-request cost of the observability middleware (latency histogram + JSON access line).

Calls a Falcon app through WSGI in-process, on a trivial route, with and without
flashsale.web.app.RequestTiming, and prints the difference per request. Metrics run in
multiprocess mode (PROMETHEUS_MULTIPROC_DIR set, as under gunicorn: every observation writes to
an mmapped file). The access line goes to fd 2: run with stderr sent where you want to measure,
e.g. a file or a pipe:

    python load/observability_bench.py 2>/tmp/access.log
    python load/observability_bench.py 2>&1 >/dev/tty | cat >/dev/null   # a pipe
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-metrics-"))

import falcon

from flashsale.metrics import CHECKOUTS
from flashsale.web.app import RequestTiming

N = int(os.environ.get("BENCH_REQUESTS", "30000"))
ROUNDS = 5


class Hello:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


def build(middleware: list) -> falcon.App:
    app = falcon.App(middleware=middleware)
    app.add_route("/healthz", Hello())
    return app


def environ() -> dict:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/healthz",
        "QUERY_STRING": "",
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
    }


def per_request_us(app: falcon.App) -> float:
    """Best of ROUNDS: microseconds per request."""

    def start_response(status: str, headers: list, exc_info: object = None) -> None:
        pass

    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(N):
            for _chunk in app(environ(), start_response):
                pass
        best = min(best, (time.perf_counter() - started) / N * 1e6)
    return best


def counter_inc_us() -> float:
    child = CHECKOUTS.labels("ok")
    started = time.perf_counter()
    for _ in range(N):
        child.inc()
    return (time.perf_counter() - started) / N * 1e6


def main() -> None:
    bare = per_request_us(build([]))
    timing_only = per_request_us(build([RequestTiming(access_log=False)]))
    with_log = per_request_us(build([RequestTiming(access_log=True, level="INFO")]))
    inc = counter_inc_us()
    out = sys.stdout
    print(f"requests per round: {N}, best of {ROUNDS} rounds", file=out)
    print(f"bare falcon app:                     {bare:7.2f} us/request", file=out)
    print(
        f"+ latency histogram:                 {timing_only:7.2f} us/request "
        f"(+{timing_only - bare:.2f})",
        file=out,
    )
    print(
        f"+ histogram + JSON access line:      {with_log:7.2f} us/request (+{with_log - bare:.2f})",
        file=out,
    )
    print(f"outcome counter inc (multiprocess):  {inc:7.2f} us", file=out)


if __name__ == "__main__":
    main()
