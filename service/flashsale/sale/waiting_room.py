"""The waiting room (FLASHSALE_WAITING_ROOM=on): one queue per sale, admission at
FLASHSALE_ADMIT_RATE per second, and the passes checkout asks for.

The queue lives in Redis under the sale's hash tag (queue.lua and the scripts that require it);
this module picks the sale, draws the randomness and turns answers into tickets and passes.

Fairness: everyone who joins before the opening gets a random score, 52 bits from `secrets`
drawn by the pod, kept in Redis and never shown. The first script call at or after the opening
seals that draw: from then on those tickets are ordered by their scores, which are independent
of when each joined, so the order is a uniformly random permutation of the pre-opening joiners
(no O(n) shuffle blocks Redis at the opening). Later joiners queue behind them by arrival.

Exact rate, any number of pods, no leader: the count of admissions is never kept by a pod. Each
script computes it from the time elapsed since an anchor in the queue's hash (queue.lua): with
ms x on the script's clock, `b + floor((x - t) * rate / 1000)`, capped at the number queued. So
admission k is due 1/rate s after the later of admission k-1 (the opening, for the first) and
the moment ticket k joined, whoever asks and however often; a join that finds nobody waiting
moves the anchor to its own time, so budget does not pile up while the queue is empty. The
clock is Redis's own (TIME), one clock for every pod; a clock injected into the service (tests)
is passed in instead. Between the opening and the time anyone asks nothing is lost: the due
admissions are recorded by the next call, which is also the one that counts them in
`flashsale_queue_admitted_total` (each script call returns how many it recorded, so across
workers and pods every admission is counted once).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flashsale import domain
from flashsale.config import Settings
from flashsale.domain import SaleError, retry_seconds, rfc3339
from flashsale.metrics import QUEUE_ADMITTED
from flashsale.sale import passes
from flashsale.sale.keeper import KEEP_AFTER_END_MS
from flashsale.stores.inventory import Inventory, InventoryError, QueuePlace

# The longest Retry-After a ticket is told: a client far back still checks in once a minute.
RETRY_AFTER_MAX = 60
_DRAW_BITS = 52  # a sorted set's score is a double: integers below 2^53 are exact


@dataclass(frozen=True)
class QueueTicket:
    """A ticket's answer. `position` is None until the order is drawn (the sale opens), then how
    many not yet admitted are ahead, plus one; 0 once admitted. `retry_after` is the seconds
    until it is worth asking again (0 once admitted)."""

    ticket: str
    sale_id: str
    position: int | None
    admitted: bool
    retry_after: int
    admission_pass: str | None = None
    pass_expires_ms: int | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ticket": self.ticket,
            "sale_id": self.sale_id,
            "position": self.position,
            "admitted": self.admitted,
            "retry_after": self.retry_after,
        }
        if self.admission_pass is not None and self.pass_expires_ms is not None:
            body["pass"] = self.admission_pass
            body["pass_expires_at"] = rfc3339(self.pass_expires_ms)
        return body


class WaitingRoom:
    """The queue of each sale and its passes. `clock`: None in production (the scripts read
    Redis's clock), a test's clock otherwise."""

    def __init__(
        self, settings: Settings, inventory: Inventory, clock: Callable[[], float] | None = None
    ):
        self.settings = settings
        self._inventory = inventory
        self._clock = clock
        self._key = settings.pass_key.encode()
        self._rate_milli = max(1, round(settings.admit_rate * 1000))
        # At least a checkout's TTL after admission, never past the sale's end (the script caps).
        self._pass_ms = max(settings.pass_ttl, settings.checkout_ttl) * 1000

    def _script_now(self) -> int | None:
        return None if self._clock is None else int(self._clock() * 1000)

    def sale_for_joins(self, now_ms: int) -> tuple[str, tuple[int, int]]:
        """The sale whose queue takes joins at `now_ms` and its window (ms): the next one from
        FLASHSALE_QUEUE_OPENS_BEFORE seconds before it opens, else the current one."""
        period_ms = self.settings.period * 1000
        start = now_ms - now_ms % period_ms
        if start + period_ms - now_ms <= self.settings.queue_opens_before * 1000:
            start += period_ms
        sale_id = domain.sale_id_for(start // 1000, self.settings.period)
        return sale_id, (start, start + period_ms)

    def join(self, user_id: str, address: str, now_ms: int, *, no_sale_retry: int) -> QueueTicket:
        """Join (or rejoin) the queue taking joins now: `rate_limited`, `no_active_sale`."""
        sale_id, window = self.sale_for_joins(now_ms)
        place = self._answer(
            self._inventory.queue_join,
            sale_id,
            user_id,
            fresh_ticket=domain.new_code(sale_id),
            draw=secrets.randbits(_DRAW_BITS),
            now_ms=self._script_now(),
            window_ms=window,
            rate_milli=self._rate_milli,
            user_rate=self.settings.rate_per_user,
            ip_rate=self.settings.rate_per_ip if address else 0,
            client_ip=address,
            expire_ms=window[1] + KEEP_AFTER_END_MS,
        )
        if place.outcome == "no_active_sale":
            raise SaleError("no_active_sale", retry_after=no_sale_retry)
        return self._ticket(sale_id, place)

    def look(self, ticket: str, sale_id: str, address: str) -> QueueTicket | None:
        """Where a well-formed ticket of `sale_id` stands (None: no such ticket), with its pass
        once admitted."""
        start, end = domain.sale_window(sale_id) or (0, 0)
        place = self._answer(
            self._inventory.queue_ticket,
            sale_id,
            ticket,
            now_ms=self._script_now(),
            window_ms=(start * 1000, end * 1000),
            rate_milli=self._rate_milli,
            ip_rate=self.settings.rate_per_ip if address else 0,
            client_ip=address,
            pass_ms=self._pass_ms,
        )
        if place.outcome == "ticket_not_found":
            return None
        return self._ticket(sale_id, place)

    def length(self, now_ms: int) -> int:
        """How many wait in the queue taking joins now (for flashsale_queue_length)."""
        sale_id, window = self.sale_for_joins(now_ms)
        reading = self._inventory.queue_length(
            sale_id, now_ms=self._script_now(), window_ms=window, rate_milli=self._rate_milli
        )
        if reading.newly:
            QUEUE_ADMITTED.inc(reading.newly)
        return reading.waiting

    def admits(self, admission_pass: str | None, sale_id: str, user_id: str, now_ms: int) -> bool:
        """Whether a checkout of `user_id` in `sale_id` shows a valid pass: no store asked."""
        return passes.admits(self._key, admission_pass, sale_id, user_id, now_ms)

    def _answer(self, call: Callable[..., QueuePlace], *args: Any, **kwargs: Any) -> QueuePlace:
        """One script call: its admissions counted, Redis away or a rate limit as errors."""
        try:
            place = call(*args, **kwargs)
        except InventoryError:
            raise SaleError("unavailable") from None
        if place.newly:
            QUEUE_ADMITTED.inc(place.newly)
        if place.outcome == "rate_limited":
            raise SaleError("rate_limited", retry_after=retry_seconds(place.wait_ms))
        return place

    def _ticket(self, sale_id: str, place: QueuePlace) -> QueueTicket:
        admission_pass = None
        if place.admitted and place.pass_until_ms:
            admission_pass = passes.issue(self._key, sale_id, place.user_id, place.pass_until_ms)
        return QueueTicket(
            ticket=place.ticket,
            sale_id=sale_id,
            position=place.position,
            admitted=place.admitted,
            retry_after=0 if place.admitted else min(retry_seconds(place.wait_ms), RETRY_AFTER_MAX),
            admission_pass=admission_pass,
            pass_expires_ms=place.pass_until_ms or None,
        )
