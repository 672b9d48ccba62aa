"""Load shedding: the work a worker has in flight, against the bound past which a request is
answered `overloaded` at once instead of queueing behind the others.

A gevent worker serves every request it has read: with more in flight than it can answer in
time, each one waits longer and none is answered sooner. Past `limit` requests in flight, one
more is refused before it costs a store call, so the admitted ones keep their latency and the
refused one hears at once when to come back. The HTTP layer counts the requests (enter/leave);
the service asks `check()` where the contract puts `overloaded` among its refusals.

Refusing is not free: reading a request and writing an answer is most of what any request
costs a worker (docs/admission.md). A crowd that retries after one second spends the pod on
refusals, so Retry-After grows while more than about a tenth of the answers are refusals and
shrinks once they are fewer, each second by a factor of up to four (up) or two (down), between 1
and MAX_RETRY_AFTER seconds; each client hears it with a random spread (0.5-1.5 times) so the
crowd does not come back at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextvars import ContextVar

from flashsale.domain import SaleError

# Refusals per admitted request the pod is willing to spend its work on (a tenth of answers).
SHED_PER_ADMITTED = 0.1
MAX_RETRY_AFTER = 60.0

# Whether the request the current greenlet serves is counted (each greenlet has its own
# context: a gevent worker serves one request per greenlet at a time).
_counted: ContextVar[bool] = ContextVar("flashsale_counted", default=False)


class Load:
    """Requests in flight in one worker. Greenlets of a worker share it; no lock is needed,
    as a greenlet only yields on I/O."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.inflight = 0
        self.retry_after = 1.0  # seconds, the centre of what shed clients are told
        self._clock = clock
        self._since = clock()
        self._admitted = self._shed = 0

    def enter(self) -> None:
        if not _counted.get():
            self.inflight += 1
            _counted.set(True)

    def leave(self) -> None:
        if _counted.get():
            self.inflight -= 1
            _counted.set(False)

    def check(self) -> None:
        """`overloaded` when this request (counted by enter) is past the bound. A shed request
        leaves the count at once: what is left of it (its record, its answer) is cheap, and
        while it waits for its record it must not keep other requests out. Counted, a crowd's
        shed requests would hold the count above the bound and nothing would be admitted."""
        now = self._clock()
        if now - self._since >= 1.0:
            self._adapt(now)
        if self.inflight > self.limit:
            self.leave()
            self._shed += 1
            spread = self.retry_after * random.uniform(0.5, 1.5)  # noqa: S311 - not a secret
            raise SaleError("overloaded", retry_after=max(1, round(spread)))
        self._admitted += 1

    def _adapt(self, now: float) -> None:
        """Retry-After for the next second, from the refusals of the last one."""
        wanted = SHED_PER_ADMITTED * max(self._admitted, 1)
        factor = min(4.0, max(0.5, self._shed / wanted))
        self.retry_after = min(MAX_RETRY_AFTER, max(1.0, self.retry_after * factor))
        self._since, self._admitted, self._shed = now, 0, 0
