"""Prometheus metrics. Counters and the latency histogram are per process (multiprocess mode
under gunicorn); the sale's stock and the outbox backlog are read from Redis at scrape time, so
every pod reports the same single truth."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

CHECKOUTS = Counter("flashsale_checkouts_total", "Checkout requests by outcome.", ["outcome"])
PURCHASES = Counter("flashsale_purchases_total", "Purchase requests by outcome.", ["outcome"])
REQUEST_DURATION = Histogram(
    "flashsale_request_duration_seconds",
    "Time to answer a request, by route and status.",
    ["route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
RECLAIMED = Counter(
    "flashsale_sweeper_reclaimed_total", "Expired reservations the sweeper returned to stock."
)
DRAINED = Counter("flashsale_outbox_drained_total", "Checkout attempts moved into PostgreSQL.")
# Each admission is recorded by exactly one script call, and the process that made the call
# counts it: the sum over workers and pods is exact.
QUEUE_ADMITTED = Counter(
    "flashsale_queue_admitted_total", "Users the waiting room admitted (recorded by this process)."
)
CONNECTIONS_REFUSED = Counter(
    "flashsale_connections_refused_total",
    "Connections closed at once: their client address held FLASHSALE_MAX_CONN_PER_IP already.",
)
SHED = Counter(
    "flashsale_shed_total",
    "Requests answered 503 overloaded at once: their worker had more in flight than it answers "
    "in time.",
    ["route"],
)


class SaleCollector(Collector):
    """Stock and backlog straight from Redis at scrape time: one truth for every pod, whatever
    its workers did. `snapshot` returns None when no sale is open; `clock` and `period` give
    the seconds into the current period, so an alert can tell a sale that failed to open.
    `queue_length` (the waiting room, when on) returns how many wait in the queue taking joins."""

    def __init__(
        self,
        snapshot: Callable[[], Any],
        backlog: Callable[[], int],
        clock: Callable[[], float] = time.time,
        period: int | None = None,
        queue_length: Callable[[], int] | None = None,
    ):
        self._snapshot = snapshot
        self._backlog = backlog
        self._queue_length = queue_length
        self._clock = clock
        self._period = period

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        if self._period:
            yield GaugeMetricFamily(
                "flashsale_period_elapsed_seconds",
                "Seconds since the current sale period began (whether or not its sale opened).",
                value=now % self._period,
            )
        try:
            status = self._snapshot()
            backlog = self._backlog()
            waiting = self._queue_length() if self._queue_length else None
        except Exception as error:  # a scrape must not fail because Redis is away
            # Expected while Redis is down: one line, no stack trace.
            log.warning("sale metrics unavailable: %s", error)
            yield _redis_up(0)
            return
        yield _redis_up(1)
        items = GaugeMetricFamily(
            "flashsale_sale_items", "Items of the current sale.", labels=["state"]
        )
        if status is not None:
            for state in ("total", "sold", "reserved", "remaining"):
                items.add_metric([state], getattr(status, state))
            yield GaugeMetricFamily(
                "flashsale_sale_open_seconds",
                "Seconds since the current sale opened.",
                value=max(0.0, now - status.starts_ms / 1000),
            )
        yield GaugeMetricFamily(
            "flashsale_sale_open", "1 while a sale is open now, else 0.", value=int(bool(status))
        )
        yield items
        yield GaugeMetricFamily(
            "flashsale_outbox_backlog", "Checkout attempts not yet in PostgreSQL.", value=backlog
        )
        if waiting is not None:
            yield GaugeMetricFamily(
                "flashsale_queue_length",
                "Users waiting, not yet admitted, in the queue that takes joins now.",
                value=waiting,
            )


def _redis_up(value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "flashsale_redis_up", "1 when this scrape could read the sale from Redis.", value=value
    )


def render(sale_collector: Collector, multiprocess_dir: str = "") -> bytes:
    """The /metrics body: every worker's counters (from `multiprocess_dir`, where gunicorn's
    workers write them; PROMETHEUS_MULTIPROC_DIR) plus the sale collector. The sale collector
    is read first: the admissions its reading of the queue records are in this scrape's count."""
    registry = CollectorRegistry()
    registry.register(sale_collector)
    if multiprocess_dir:
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
    else:
        for collector in (
            CHECKOUTS,
            PURCHASES,
            REQUEST_DURATION,
            RECLAIMED,
            DRAINED,
            QUEUE_ADMITTED,
            SHED,
            CONNECTIONS_REFUSED,
        ):
            registry.register(collector)
    return generate_latest(registry)
