"""Load shedding: the work a worker has in flight, against the bound past which a request is
answered `overloaded` at once instead of queueing behind the others.

A gevent worker serves every request it has read: with more in flight than it can answer in
time, each one waits longer and none is answered sooner. Past `limit` requests in flight, one
more is refused before it costs a store call, so the admitted ones keep their latency and the
refused one hears at once when to come back. The HTTP layer counts the requests (enter/leave);
the service asks `check()` where the contract puts `overloaded` among its refusals.
"""

from __future__ import annotations

from flashsale.domain import SaleError

# Seconds a shed client is told to wait (Retry-After). One second lets the work in flight
# (a few hundred ms of it at most, see docs/admission.md) drain before the client comes back.
RETRY_AFTER_SECONDS = 1


class Load:
    """Requests in flight in one worker. Greenlets of a worker share it; no lock is needed,
    as a greenlet only yields on I/O."""

    def __init__(self, limit: int):
        self.limit = limit
        self.inflight = 0

    def enter(self) -> None:
        self.inflight += 1

    def leave(self) -> None:
        self.inflight -= 1

    def check(self) -> None:
        """`overloaded` when this request (counted by enter) is past the bound."""
        if self.inflight > self.limit:
            raise SaleError("overloaded", retry_after=RETRY_AFTER_SECONDS)
