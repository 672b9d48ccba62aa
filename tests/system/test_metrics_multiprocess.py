"""Prometheus counters are exact across gunicorn workers (multiprocess mode), also after a worker
is killed with SIGKILL and replaced; every request writes exactly one JSON access line.

A real `flashsale serve` with three gevent workers takes checkouts and purchases from many
keep-alive clients (so every worker serves some); the test writes down the outcome of every
answer, kills a worker that has counted requests, sends more, and then compares the scraped
counters with what the clients heard, outcome by outcome.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import flashsale, gunicorn_children, serving

WORKERS = 3
CLIENTS = 12
PER_PHASE = 240  # checkout requests per phase (each ok one is followed by a purchase)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Shoppers:
    """CLIENTS threads, each with its own keep-alive connection; every answer is tallied."""

    def __init__(self, base: str):
        self.base = base
        self.checkouts: Counter[str] = Counter()  # outcome -> count
        self.checkout_statuses: Counter[int] = Counter()
        self.purchases: Counter[str] = Counter()
        self.requests_sent = 0
        self._lock = threading.Lock()
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    @staticmethod
    def _outcome(response: requests.Response) -> str:
        return "ok" if response.status_code == 200 else response.json()["error"]["code"]

    def _one(self, n: int) -> None:
        session = self._session()
        params: dict[str, str] = {"user_id": f"u{n % 40}", "id": str(1 + n * 7 % 60)}
        if n % 23 == 0:
            del params["user_id"]  # invalid_request
        response = session.post(f"{self.base}/checkout", params=params, timeout=15)
        outcome = self._outcome(response)
        with self._lock:
            self.checkouts[outcome] += 1
            self.checkout_statuses[response.status_code] += 1
            self.requests_sent += 1
        code = response.json()["code"] if outcome == "ok" else f"nosuch.{n}"
        if outcome == "ok" or n % 11 == 0:
            bought = session.post(f"{self.base}/purchase", params={"code": code}, timeout=15)
            with self._lock:
                self.purchases[self._outcome(bought)] += 1
                self.requests_sent += 1

    def run(self, start: int, count: int) -> None:
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(self._one, range(start, start + count)))


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """sample name + sorted labels -> value, from one /metrics answer."""
    text = requests.get(f"{base}/metrics", timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict, name: str, **match: str) -> float:
    return sum(
        value
        for (sample, labels), value in samples.items()
        if sample == name and all(dict(labels).get(k) == v for k, v in match.items())
    )


def by_label(samples: dict, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (sample, labels), value in samples.items():
        if sample == name and value:
            key = dict(labels)[label]
            out[key] = out.get(key, 0) + value
    return out


def access_lines(log_dir: Path) -> Iterator[dict]:
    for path in log_dir.glob("serve-*.log"):
        for line in path.read_text().splitlines():
            if line.startswith("{") and '"flashsale.access"' in line:
                yield json.loads(line)


def test_counters_are_exact_across_workers_and_a_killed_worker(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**service_env, "LOG_LEVEL": "INFO"}
    flashsale("open-sale", env=env)
    with serving(env, tmp_path, workers=WORKERS) as (base, proc):
        (metrics_dir,) = tmp_path.glob("metrics-*")  # serving() puts the directory there
        wait_for(lambda: len(gunicorn_children(proc.pid)[0]) == WORKERS, 30, "three workers")
        shoppers = Shoppers(base)

        shoppers.run(0, PER_PHASE)

        # A worker that has counted requests (its counter file exists) dies without warning.
        counted = {int(p.stem.split("_")[1]) for p in metrics_dir.glob("counter_*.db")}
        victims = sorted(set(gunicorn_children(proc.pid)[0]) & counted)
        assert victims, f"no worker has counted anything: {sorted(counted)}"
        before = scrape(base)
        os.kill(victims[0], signal.SIGKILL)
        wait_for(
            lambda: (
                len(gunicorn_children(proc.pid)[0]) == WORKERS
                and victims[0] not in gunicorn_children(proc.pid)[0]
            ),
            30,
            "the master to replace the killed worker",
        )
        # The dead worker's counts are still in the sums.
        assert (
            total(scrape(base), "flashsale_checkouts_total")
            == total(before, "flashsale_checkouts_total")
            == PER_PHASE
        )

        shoppers.run(PER_PHASE, PER_PHASE)
        checkouts = 2 * PER_PHASE
        assert sum(shoppers.checkouts.values()) == checkouts
        # Outcomes of more than one kind were produced, errors included.
        assert {"ok", "invalid_request", "item_not_found"} <= set(shoppers.checkouts)

        # Whichever worker answers the scrape, the sums are the same and exact.
        for _ in range(3 * WORKERS):
            samples = scrape(base)
            assert total(samples, "flashsale_checkouts_total") == checkouts
            assert by_label(samples, "flashsale_checkouts_total", "outcome") == dict(
                shoppers.checkouts
            )
            assert by_label(samples, "flashsale_purchases_total", "outcome") == dict(
                shoppers.purchases
            )
            count = "flashsale_request_duration_seconds_count"
            assert total(samples, count, route="/checkout") == checkouts
            assert {
                int(k): v
                for k, v in by_label(
                    {k: v for k, v in samples.items() if ("route", "/checkout") in k[1]},
                    count,
                    "status",
                ).items()
            } == dict(shoppers.checkout_statuses)
            assert total(samples, count, route="/purchase") == sum(shoppers.purchases.values())
            # The +Inf bucket of the histogram agrees with its count.
            inf = total(
                samples, "flashsale_request_duration_seconds_bucket", route="/checkout", le="+Inf"
            )
            assert inf == checkouts
            assert total(samples, "flashsale_sale_items", state="total") == 50

    # One JSON access line per request, from every worker (the killed one's included).
    lines = [line for line in access_lines(tmp_path) if line["route"] in ("/checkout", "/purchase")]
    assert len(lines) == shoppers.requests_sent
    assert Counter(line["outcome"] for line in lines if line["route"] == "/checkout") == (
        shoppers.checkouts
    )
    assert len({line["request_id"] for line in lines}) == len(lines)
    assert all(line["latency_ms"] >= 0 and line["level"] == "info" for line in lines)
