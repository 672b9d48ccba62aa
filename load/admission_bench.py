"""Admission under a crowd: load shedding and the connection rules, side by side.

    python load/admission_bench.py [--parts a b c] [--duration 10] [--inflight 25 50 100 200]
                                   [--out load/results] [--plot docs/perf/admission.png]

Starts Redis and PostgreSQL (or uses REDIS_URL / DATABASE_URL) and, one after the other, the
service under each configuration compared (2 gevent workers, the sweeper on, loopback only,
a probe port), each with a sale of its own (100,000 items, checkout TTL 2 s, rate limit off):

- `shed`: as shipped (FLASHSALE_MAX_INFLIGHT at its default, or each of --inflight in part b);
- `noshed`: the same worker with shedding off (FLASHSALE_MAX_INFLIGHT=1000000);
- `before`: gunicorn's own gevent worker with 1,000 connections and no shedding, as the
  service was before these changes.

(a) `wrk -t2 -c4000 -d<duration>s --timeout 5s` of random checkouts against each; meanwhile,
every 0.25 s, /healthz on a new connection on the main port and on the probe port, and every
0.5 s a checkout on a new connection (its first answer's time). After each run the pod's
sweeper drains the outbox, and the attempt rows of the sale are counted against the answers.
(b) load/crowd.py: 4,000 users that honour Retry-After; the decided answers (anything but
`overloaded`) per second and their p99, for each bound of --inflight and without shedding.
(c) load/slow_sockets.py: 3,200 sockets from 127.0.0.1 that send half a request line, while
a checkout from 127.0.0.2 on a new connection every 0.1 s is timed; `before`, as shipped
(no cap) and with FLASHSALE_MAX_CONN_PER_IP=100.

Writes admission-<timestamp>.json into --out and the plot to --plot.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bench
import kit
import psycopg2

from flashsale.config import Settings
from flashsale.stores.inventory.keys import keys_for

ITEMS = 100_000
BEFORE = "--worker-class gevent --worker-connections 1000"
CONFIGS: dict[str, dict[str, Any]] = {
    "shed": {},
    "noshed": {"FLASHSALE_MAX_INFLIGHT": kit.NO_SHEDDING},
    "before": {"FLASHSALE_MAX_INFLIGHT": kit.NO_SHEDDING, "GUNICORN_CMD_ARGS": BEFORE},
}
STATUS_OUTCOMES = {
    "200": ("ok",),
    "409": ("item_unavailable", "sold_out"),
    "503": ("overloaded", "unavailable"),
}


# --- samplers ----------------------------------------------------------------------------------


def timed_request(
    url: str, method: str, path: str, *, source: str = "", timeout: float = 10
) -> tuple[float | None, str]:
    """Seconds from connect to the end of the answer's head on a new connection (None: no
    answer within `timeout`), and the status or what went wrong."""
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    request = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    try:
        with socket.create_connection(
            (host, int(port)), timeout=timeout, source_address=(source, 0) if source else None
        ) as sock:
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                sock.settimeout(max(0.01, timeout - (time.monotonic() - started)))
                chunk = sock.recv(4096)
                if not chunk:
                    return None, "closed"
                data += chunk
    except TimeoutError:
        return None, "timeout"
    except OSError as error:
        return None, type(error).__name__
    return time.monotonic() - started, data[9:12].decode()


class Sampler(threading.Thread):
    """A request on a new connection every `interval` seconds, until stopped, each in a thread
    of its own: a stalled one does not delay the next (at most 200 at once)."""

    def __init__(self, name: str, url: str, method: str, path: Any, interval: float, source=""):
        super().__init__(daemon=True)
        self.label, self.url, self.method, self.path = name, url, method, path
        self.interval, self.source = interval, source
        self.samples: list[tuple[float, float | None, str]] = []
        self._halt = threading.Event()
        self._pool = ThreadPoolExecutor(200)
        self.t0 = time.monotonic()

    def _one(self, due: float, path: str) -> None:
        took, status = timed_request(self.url, self.method, path, source=self.source)
        since_due = time.monotonic() - self.t0 - due  # a wait for a free thread included
        self.samples.append((round(due, 2), None if took is None else since_due, status))

    def run(self) -> None:
        self.t0 = time.monotonic()
        due = 0.0
        while not self._halt.is_set():
            path = self.path() if callable(self.path) else self.path
            self._pool.submit(self._one, due, path)
            due += self.interval
            self._halt.wait(max(0.0, self.t0 + due - time.monotonic()))

    def stop(self) -> dict[str, Any]:
        self._halt.set()
        self.join(15)
        self._pool.shutdown(wait=True)
        self.samples.sort()
        answered = [t for _, t, _ in self.samples if t is not None]
        return {
            "samples": len(self.samples),
            "unanswered": len(self.samples) - len(answered),
            "max_s": round(max(answered), 3) if answered else None,
            "p50_s": round(sorted(answered)[len(answered) // 2], 3) if answered else None,
            "statuses": dict(Counter(s for _, _, s in self.samples)),
            "series": self.samples,
        }


def random_checkout() -> str:
    return f"/checkout?user_id=s{random.randrange(10**9)}&id={random.randint(1, ITEMS)}"


def start_samplers(served: kit.Served, source: str = "") -> list[Sampler]:
    samplers = [
        Sampler("healthz_main", served.base_url, "GET", "/healthz", 0.25, source),
        Sampler("new_connection_checkout", served.base_url, "POST", random_checkout, 0.5, source),
    ]
    if served.probe_url:
        samplers.append(Sampler("healthz_probe_port", served.probe_url, "GET", "/healthz", 0.25))
    for sampler in samplers:
        sampler.start()
    return samplers


def stop_samplers(samplers: list[Sampler]) -> dict[str, Any]:
    return {s.label: s.stop() for s in samplers}


def worker_rss_kb(served: kit.Served) -> int:
    """Largest resident memory of any worker now."""
    largest = 0
    for pid in served.workers():
        with contextlib.suppress(OSError, ValueError, StopIteration):
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            largest = max(
                largest, next(int(ln.split()[1]) for ln in status if ln.startswith("VmRSS"))
            )
    return largest


def accept_queue(port: str) -> int:
    """Connections the kernel has completed and no worker has accepted yet (Recv-Q)."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout.split()
    return int(out[1]) if len(out) > 1 and out[1].isdigit() else 0


class PodWatch(threading.Thread):
    """Each second: the largest resident memory and open files of the workers, and the
    connections waiting in the listening socket's accept queue."""

    def __init__(self, served: kit.Served):
        super().__init__(daemon=True)
        self.served = served
        self.idle_kb = self.peak_kb = worker_rss_kb(served)
        self.open_files: dict[int, int] = {}  # per worker, the most seen: its connections
        self.queued: list[int] = []
        self._halt = threading.Event()

    def run(self) -> None:
        port = self.served.base_url.rsplit(":", 1)[1]
        while not self._halt.wait(1.0):
            self.peak_kb = max(self.peak_kb, worker_rss_kb(self.served))
            self.queued.append(accept_queue(port))
            for pid in self.served.workers():
                with contextlib.suppress(OSError):
                    count = len(os.listdir(f"/proc/{pid}/fd"))
                    self.open_files[pid] = max(self.open_files.get(pid, 0), count)

    def stop(self) -> dict[str, Any]:
        self._halt.set()
        self.join(5)
        return {
            "before_mb": round(self.idle_kb / 1024),
            "peak_mb": round(self.peak_kb / 1024),
            "peak_open_files_per_worker": sorted(self.open_files.values()),
            "accept_queue_each_second": self.queued,
        }


# --- records -----------------------------------------------------------------------------------


def rows_by_outcome(database_url: str, sale_id: str) -> Counter[str]:
    with contextlib.closing(psycopg2.connect(database_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT outcome, count(*) FROM checkout_attempts WHERE sale_id = %s GROUP BY outcome",
            (sale_id,),
        )
        return Counter(dict(cur.fetchall()))


def drained_rows(env: dict[str, str], sale_id: str, timeout: float = 120) -> Counter[str]:
    """The sale's rows once its outbox is empty and the count stands still."""
    client = kit.redis_client(env["REDIS_URL"])
    deadline = time.monotonic() + timeout
    last: Counter[str] | None = None
    while time.monotonic() < deadline:
        rows = rows_by_outcome(env["DATABASE_URL"], sale_id)
        if client.xlen(keys_for(sale_id).outbox) == 0 and rows == last:
            return rows
        last = rows
        time.sleep(1.0)
    raise TimeoutError(f"outbox of {sale_id} not drained within {timeout:.0f} s")


def compare(rows: Counter[str], answers: Counter[str]) -> dict[str, Any]:
    """Rows against answers by status: every answer needs its row (rows >= answers); rows
    beyond the answers are requests cut off by the end of the run or by a client's timeout,
    which the server still answered and recorded."""
    grouped: Counter[tuple[str, ...]] = Counter()
    for answer, count in answers.items():  # an HTTP status (wrk) or an outcome (the crowd)
        outcomes = STATUS_OUTCOMES.get(answer, (answer,))
        for group in STATUS_OUTCOMES.values():  # an outcome the crowd names joins its status's
            if answer in group:
                outcomes = group
        grouped[outcomes] += count
    missing = {}
    for outcomes, count in grouped.items():
        have = sum(rows.get(o, 0) for o in outcomes)
        if have < count:
            missing["/".join(outcomes)] = count - have
    return {
        "rows": dict(rows),
        "answers_by_status": dict(answers),
        "rows_total": sum(rows.values()),
        "answers_total": sum(answers.values()),
        "answers_without_a_row": missing,
    }


# --- the parts -----------------------------------------------------------------------------


def config_env(base: dict[str, str], salt: int, **extra: Any) -> dict[str, str]:
    env = {**base, "FLASHSALE_PERIOD": str(kit.open_period(salt=salt))}
    env.update({k: str(v) for k, v in extra.items()})
    env["FLASHSALE_PROBE_PORT"] = str(kit.free_port())
    return env


@contextlib.contextmanager
def served(env: dict[str, str], state: Path, name: str):
    """The service on its own sale, warmed up: (server, sale, the sale's rows so far)."""
    sale = kit.open_sale(env)
    with kit.serve_service(env, state / f"{name}.log") as server:
        bench.run_wrk(
            server.base_url, duration=2, connections=200, threads=2, items=ITEMS, users=10**6
        )
        time.sleep(2)
        yield server, sale, drained_rows(env, sale.sale_id)


def part_a(base: dict[str, str], state: Path, args: argparse.Namespace) -> dict[str, Any]:
    results = {}
    for n, name in enumerate(args.configs):
        env = config_env(base, salt=100 + n, **CONFIGS[name])
        with served(env, state, f"a-{name}") as (server, sale, rows_before):
            watch = PodWatch(server)
            watch.start()
            samplers = start_samplers(server)
            cpu_before = kit.cpu_seconds([server.master_pid])
            run = bench.run_wrk(
                server.base_url,
                duration=args.duration,
                connections=args.connections,
                threads=2,
                items=ITEMS,
                users=10**6,
            )
            cpu = kit.cpu_seconds([server.master_pid]) - cpu_before
            samples = stop_samplers(samplers)
            rows = drained_rows(env, sale.sale_id) - rows_before
        answers = Counter(run["statuses"])
        for status in samples["new_connection_checkout"]["statuses"]:
            if status.isdigit():
                answers[status] += samples["new_connection_checkout"]["statuses"][status]
        pct = run["latency_us"]["percentiles"]
        results[name] = {
            "rps": round(run["rps"]),
            "p50_ms": round(pct["50"] / 1000),
            "p90_ms": round(pct["90"] / 1000),
            "p99_ms": round(pct["99"] / 1000),
            "max_ms": round(run["latency_us"]["max"] / 1000),
            "statuses": run["statuses"],
            "shed_share": round(run["statuses"].get("503", 0) / max(1, run["requests"]), 3),
            "errors": run["errors"],
            "server_cpu_s": round(cpu, 1),
            "pod": watch.stop(),
            "samplers": samples,
            "records": compare(rows, answers),
        }
        report_a(name, results[name])
    return results


def report_a(name: str, r: dict[str, Any]) -> None:
    s = r["samplers"]
    print(
        f"  (a) {name:<7} {r['rps']:>6} rps  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  "
        f"max {r['max_ms']} ms  shed {r['shed_share']:.1%}  timeouts {r['errors']['timeout']}  "
        f"new-conn max {s['new_connection_checkout']['max_s']} s "
        f"(unanswered {s['new_connection_checkout']['unanswered']} of "
        f"{s['new_connection_checkout']['samples']})  "
        f"accept queue max {max(r['pod']['accept_queue_each_second'], default=0)}  "
        f"healthz main max {s['healthz_main']['max_s']} s "
        f"probe max {s.get('healthz_probe_port', {}).get('max_s')} s  "
        f"answers without a row {r['records']['answers_without_a_row']}  "
        f"worker rss {r['pod']}",
        flush=True,
    )


def run_crowd(url: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(kit.LOAD_DIR / "crowd.py"),
        "--url",
        url,
        "--users",
        str(args.users),
        "--duration",
        str(args.crowd_duration),
        "--warmup",
        "3",
        "--items",
        str(ITEMS),
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=args.crowd_duration + 120
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def part_b(base: dict[str, str], state: Path, args: argparse.Namespace) -> dict[str, Any]:
    runs = [("noshed", kit.NO_SHEDDING)] + [(f"shed-{n}", n) for n in args.inflight]
    results = {}
    for n, (name, bound) in enumerate(runs):
        env = config_env(base, salt=200 + n, FLASHSALE_MAX_INFLIGHT=bound)
        with served(env, state, f"b-{name}") as (server, sale, rows_before):
            samplers = start_samplers(server)
            cpu_before = kit.cpu_seconds([server.master_pid])
            crowd = run_crowd(server.base_url, args)
            cpu = kit.cpu_seconds([server.master_pid]) - cpu_before
            samples = stop_samplers(samplers)
            rows = drained_rows(env, sale.sale_id) - rows_before
        answers: Counter[str] = Counter(crowd["by_outcome"])
        for status, count in samples["new_connection_checkout"]["statuses"].items():
            if status.isdigit():
                answers[status] += count
        crowd.update(
            bound=bound,
            server_cpu_s=round(cpu, 1),
            samplers=samples,
            records=compare(rows, answers),
        )
        results[name] = crowd
        lat = crowd["decided_latency_ms"]
        print(
            f"  (b) {name:<10} decided {crowd['decided_per_second']:>7}/s  p50 {lat['50']} ms  "
            f"p99 {lat['99']} ms  shed {crowd['shed_share']:.1%}  timeouts {crowd['timeouts']}  "
            f"resets {crowd['resets']}  healthz max {samples['healthz_main']['max_s']} s  "
            f"answers without a row {crowd['records']['answers_without_a_row']}",
            flush=True,
        )
    return results


def part_c(base: dict[str, str], state: Path, args: argparse.Namespace) -> dict[str, Any]:
    configs = {
        "before": CONFIGS["before"],
        "shipped": {},
        "cap-100": {"FLASHSALE_MAX_CONN_PER_IP": 100},
    }
    results = {}
    for n, (name, extra) in enumerate(configs.items()):
        env = config_env(base, salt=300 + n, **extra)
        with served(env, state, f"c-{name}") as (server, _, _):
            legit = Sampler("legit", server.base_url, "POST", random_checkout, 0.1, "127.0.0.2")
            health = Sampler("healthz_main", server.base_url, "GET", "/healthz", 0.25, "127.0.0.3")
            probe = Sampler("healthz_probe_port", server.probe_url, "GET", "/healthz", 0.25)
            attack = subprocess.Popen(
                [
                    sys.executable,
                    str(kit.LOAD_DIR / "slow_sockets.py"),
                    "--url",
                    server.base_url,
                    "--sockets",
                    str(args.slow_sockets),
                    "--duration",
                    str(args.slow_duration),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(2)  # the slow sockets are open
            for sampler in (legit, health, probe):
                sampler.start()
            out, _ = attack.communicate(timeout=args.slow_duration + 60)
            samples = {s.label: s.stop() for s in (legit, health, probe)}
        results[name] = {"slow_sockets": json.loads(out.strip().splitlines()[-1]), **samples}
        lg = samples["legit"]
        print(
            f"  (c) {name:<8} legit: {lg['samples']} checkouts, max {lg['max_s']} s, "
            f"unanswered {lg['unanswered']}, over 2 s "
            f"{sum(1 for _, t, _ in lg['series'] if t is None or t > 2)}; healthz main max "
            f"{samples['healthz_main']['max_s']} s, probe max "
            f"{samples['healthz_probe_port']['max_s']} s; slow sockets "
            f"{results[name]['slow_sockets']}",
            flush=True,
        )
    return results


# --- the plot ------------------------------------------------------------------------------


NONE = 20.0  # where an unanswered sample is drawn (s)


def draw_series(ax: Any, series: list, color: str | None, label: str, style: str = "-") -> None:
    """Answer times over the run; unanswered samples as crosses at NONE."""
    answered = [(t, lat) for t, lat, _ in series if lat is not None]
    ax.plot([t for t, _ in answered], [lat for _, lat in answered], style, color=color, label=label)
    missing = [t for t, lat, _ in series if lat is None]
    if missing:
        ax.plot(missing, [NONE] * len(missing), "x", color=color)


def plot(result: dict[str, Any], path: Path) -> None:
    plt = kit.pyplot()
    parts = [p for p in ("a", "b", "c") if p in result]
    fig, axes = plt.subplots(1, len(parts), figsize=(6.4 * len(parts), 5), squeeze=False)
    colors = {"shed": "#2f6fb0", "noshed": "#c0392b", "before": "#7f8c8d", "shipped": "#2f6fb0"}
    colors["cap-100"] = "#27ae60"
    for ax, part in zip(axes[0], parts, strict=True):
        data = result[part]
        if part == "a":
            for name, r in data.items():
                samplers = r["samplers"]
                draw_series(
                    ax,
                    samplers["new_connection_checkout"]["series"],
                    colors.get(name),
                    f"{name}: wrk p99 {r['p99_ms']} ms, {r['shed_share']:.0%} shed; "
                    f"new connection (line), /healthz (dots)",
                )
                draw_series(ax, samplers["healthz_main"]["series"], colors.get(name), "", ":")
            ax.axhline(2, color="black", linestyle="--", linewidth=0.8)
            ax.axhline(1, color="black", linestyle=":", linewidth=0.8)
            ax.set_xlabel("s into the wrk run")
            ax.set_ylabel(f"s to answer on a new connection (log; x = none in 10 s, at {NONE:g})")
            ax.set_title(
                f"(a) wrk -c{result['config']['connections']}, random checkouts", fontsize=9
            )
        elif part == "b":
            names = list(data)
            rate = [data[n]["decided_per_second"] for n in names]
            p99 = [data[n]["decided_latency_ms"]["99"] for n in names]
            bars = ax.bar(
                range(len(names)), rate, color=["#c0392b"] + ["#2f6fb0"] * (len(names) - 1)
            )
            ax.bar_label(bars, fmt="%.0f")
            ax.set_xticks(range(len(names)), names, fontsize=8)
            ax.set_ylabel("decided checkouts / s (bars)")
            twin = ax.twinx()
            twin.plot(range(len(names)), p99, marker="o", color="black", label="p99 of decided")
            twin.axhline(250, color="black", linestyle="--", linewidth=0.8, label="250 ms")
            twin.set_yscale("log")
            twin.set_ylabel("p99 of decided answers, ms (log)")
            twin.legend(fontsize=8, loc="upper right")
            ax.set_title(
                f"(b) {result['config']['users']} users honouring Retry-After; "
                "noshed, then FLASHSALE_MAX_INFLIGHT",
                fontsize=9,
            )
        else:
            for name, r in data.items():
                legit = r["legit"]
                draw_series(
                    ax,
                    legit["series"],
                    colors.get(name),
                    f"{name}: max {legit['max_s']} s, unanswered {legit['unanswered']} "
                    f"of {legit['samples']}",
                    ".",
                )
            ax.axhline(2, color="black", linestyle="--", linewidth=0.8)
            ax.set_xlabel("s into the attack")
            ax.set_ylabel("s to answer 127.0.0.2's checkout (log; x = none in 10 s)")
            ax.set_title(
                f"(c) {result['config']['slow_sockets']} slow sockets from 127.0.0.1", fontsize=9
            )
        if part != "b":
            ax.set_yscale("log")
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(
        f"flashsale admission {result['started_at']}: 2 gevent workers, Redis, PostgreSQL and "
        "the load on one 2-core machine",
        fontsize=10,
    )
    kit.save_figure(fig, path, dpi=100)


# --- the run -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--duration", type=float, default=10, help="seconds of each wrk run")
    parser.add_argument("--connections", type=int, default=4000)
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--crowd-duration", type=float, default=15)
    parser.add_argument(
        "--inflight", type=int, nargs="+", default=[Settings().max_inflight], help="bounds (b)"
    )
    parser.add_argument("--slow-sockets", type=int, default=3200)
    parser.add_argument("--slow-duration", type=float, default=30)
    parser.add_argument("--out", type=Path, default=kit.LOAD_DIR / "results")
    parser.add_argument("--plot", type=Path, default=None, help="default: --out/admission-<ts>.png")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None and "a" in args.parts:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    args.duration = min(max(args.duration, 1), 60)
    args.out.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    result: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    result["config"].update(cpus=os.cpu_count(), default_max_inflight=Settings().max_inflight)
    with contextlib.ExitStack() as stack:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flashsale-adm-")))
        stores = stack.enter_context(kit.stores(state))
        stack.callback(kit.keep_logs, state, args.out, f"admission-{stamp}")
        base = kit.service_env(
            stores,
            FLASHSALE_ITEMS=ITEMS,
            FLASHSALE_CHECKOUT_TTL=2,
            FLASHSALE_RATE_PER_USER=0,
            FLASHSALE_USER_LIMIT=1000,  # the crowd's users check out again and again
            PROMETHEUS_MULTIPROC_DIR=str(state / "metrics"),
        )
        for part, run in (("a", part_a), ("b", part_b), ("c", part_c)):
            if part in args.parts:
                print(f"part ({part}) ...", flush=True)
                result[part] = run(base, state, args)
                result[f"loadavg_after_{part}"] = os.getloadavg()
    json_path = args.out / f"admission-{stamp}.json"
    json_path.write_text(json.dumps(result, indent=1, default=str))
    png = args.plot or args.out / f"admission-{stamp}.png"
    plot(result, png)
    print(f"wrote {json_path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
