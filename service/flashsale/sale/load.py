"""Load shedding: the work a worker has in flight, against the bound past which a request is
answered `overloaded` at once instead of queueing behind the others.

A gevent worker serves every request it has read: with more in flight than it can answer in
time, each one waits longer and none is answered sooner. Past `limit` requests in flight, one
more is refused before it costs a store call, so the admitted ones keep their latency and the
refused one hears at once when to come back. The HTTP layer counts the requests (enter/leave);
the service asks `check()` where the error table puts `overloaded` among the refusals.

Refusing is not free: reading a request and writing an answer is most of what any request
costs a worker (docs/admission.md), so a crowd told to retry after a second would spend the
pod on refusals. Instead, each worker books the retries it asks for in a calendar of the coming
seconds, no more in any one second than a tenth of what it admits a second: Retry-After is the
first second with room. However large the crowd, retries then cost the worker at most about a
tenth of its work, and they come back spread out, not in waves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar

from flashsale.domain import SaleError

# Retries a worker books into one second, per request it admits a second.
RETRIES_PER_ADMITTED = 0.1
MAX_RETRY_AFTER = 60  # seconds: past this the crowd is told 60 and the calendar overflows

# Whether the request the current greenlet serves is counted (each greenlet has its own
# context: a gevent worker serves one request per greenlet at a time).
_counted: ContextVar[bool] = ContextVar("flashsale_counted", default=False)


class Load:
    """Requests in flight in one worker. Greenlets of a worker share it; no lock is needed,
    as a greenlet only yields on I/O."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.inflight = 0
        self.rate = 0.0  # requests admitted a second, smoothed over the last seconds
        self._clock = clock
        self._second = int(clock())
        self._admitted = 0  # in the current second
        # Retries booked for each of the coming seconds (a ring indexed by second).
        self._booked = [0] * (MAX_RETRY_AFTER + 1)

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
        if int(now) != self._second:
            self._next_second(int(now))
        if self.inflight > self.limit:
            self.leave()
            raise SaleError("overloaded", retry_after=self._book(now))
        self._admitted += 1

    def _next_second(self, second: int) -> None:
        passed = second - self._second
        self.rate = (self.rate + self._admitted) / 2 if passed == 1 else self._admitted / passed
        for past in range(self._second + 1, self._second + 1 + min(passed, len(self._booked))):
            self._booked[past % len(self._booked)] = 0  # those retries are due or done
        self._second, self._admitted = second, 0

    def _book(self, now: float) -> int:
        """The first coming second with room for one more retry."""
        # When a crowd arrives the smoothed rate lags it: this second's pace so far counts too.
        pace = self._admitted / max(now - self._second, 0.25)
        room = max(1.0, RETRIES_PER_ADMITTED * max(self.rate, pace))
        for delay in range(1, MAX_RETRY_AFTER + 1):
            slot = (self._second + delay) % len(self._booked)
            if self._booked[slot] < room:
                self._booked[slot] += 1
                return delay
        return MAX_RETRY_AFTER
