"""The service in a test: its environment against the test's stores, a period no test run
crosses, a clock the test moves by hand, and the audit a test ends with."""

from __future__ import annotations

import os

from flashsale.domain import Sale
from flashsale.sale.audit import audit_sale
from flashsale.sale.keeper import SaleKeeper

# A period so long that no test run crosses a boundary, unless the test sets its own.
LONG_PERIOD = 10_000_000

# The sale most tests run: in the long period, a small per-user limit, no rate limit, and a
# sweeper (the pod's, under `flashsale serve`) that runs five times a second.
TEST_SALE = {
    "FLASHSALE_PERIOD": str(LONG_PERIOD),
    "FLASHSALE_USER_LIMIT": "3",
    "FLASHSALE_RATE_PER_USER": "0",
    "FLASHSALE_SWEEP_INTERVAL": "0.2",
}

# A rate for the limit tests, in tokens per second: a bucket of one refills in 10 s.
SLOW_RATE = "0.1"


def allowed_at_most(rate: float, elapsed: float, capacity: float = 1) -> int:
    """The most a token bucket of `capacity`, refilled at `rate` a second, lets through in
    `elapsed` seconds."""
    return int(capacity + rate * elapsed)


def service_environment(redis_url: str, database_url: str, **settings: str) -> dict[str, str]:
    """The environment of the real console script against these stores: this process's, less
    any FLASHSALE_* or PROMETHEUS* setting of the shell the tests run in, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASHSALE_", "PROMETHEUS"))}
    return {**env, "REDIS_URL": redis_url, "DATABASE_URL": database_url, **settings}


class Clock:
    """A clock the test moves by hand, for the parts built with an injected clock."""

    def __init__(self, start: float):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def assert_sweeps_clean(keeper: SaleKeeper, sale: Sale) -> None:
    """One sweep (outbox drained, pending purchases settled), then the audit finds nothing."""
    keeper.sweep()
    now_ms = int(keeper.clock() * 1000)
    report = audit_sale(keeper.inventory, keeper.database, sale, now_ms=now_ms, window_ms=5000)
    assert report.clean, report.render()
