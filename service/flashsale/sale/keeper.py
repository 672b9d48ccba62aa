"""The jobs that keep sales: open a period's sale, and the sweep, whose steps are restore (a sale
Redis lost), reclaim (expired reservations), settle (half-done purchases), drain (attempts into
PostgreSQL) and close (an ended sale's final figures).

Every step is idempotent, so a CronJob that runs twice, late, or next to another changes
nothing the first run did not already decide.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from flashsale import catalog, domain
from flashsale.config import Settings
from flashsale.domain import Sale
from flashsale.metrics import RECLAIMED
from flashsale.sale.drain import drain_sale
from flashsale.stores.inventory import Inventory, InventoryError
from flashsale.stores.records import Database, DatabaseError

log = logging.getLogger(__name__)

# Redis keeps a sale this long after its end, so late retries and audits find it.
KEEP_AFTER_END_MS = 24 * 3600 * 1000
# How long an outbox stays registered after its sale ended: writers compute the current sale
# from their clock, so none writes to an old sale's outbox past this.
OUTBOX_LINGER_MS = 5 * 60 * 1000
_CHUNK = 1000


@dataclass
class SweepReport:
    reclaimed: int = 0
    drained: int = 0
    settled: int = 0
    voided: int = 0
    restored: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)


class SaleKeeper:
    """What the opener and sweeper jobs do, and what `flashsale dev` runs on timers."""

    def __init__(
        self,
        settings: Settings,
        inventory: Inventory,
        database: Database,
        *,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.inventory = inventory
        self.database = database
        self.clock = clock
        self._partitioned: set[date] = set()

    # --- opening and restoring --------------------------------------------------------------

    def planned_sale(self, at: float) -> Sale:
        """The sale of the period containing `at`, as the settings say now; over
        FLASHSALE_REDIS_SHARDS shards, whose hash tags are chosen now (docs/scaling.md)."""
        period = self.settings.period
        start = domain.period_start(at, period)
        sale_id = domain.sale_id_for(start, period)
        return Sale(
            sale_id=sale_id,
            starts_at=start,
            ends_at=start + period,
            total_items=self.settings.items,
            user_limit=self.settings.user_limit,
            seed=secrets.token_hex(8),
            shard_tags=self.inventory.shard_tags(sale_id, self.settings.redis_shards),
        )

    def open_sale(self, at: float | None = None) -> tuple[Sale, bool]:
        """Open the sale of the period containing `at`: (sale, whether this call loaded Redis)."""
        planned = self.planned_sale(self.clock() if at is None else at)
        self.ensure_partitions(planned.starts_at, planned.starts_at)
        sale = self.database.create_sale(planned, catalog.items_of(planned))
        return sale, self.ensure_loaded(sale)

    def open_due(self, preload_seconds: int) -> list[Sale]:
        """Open the current period's sale and, within `preload_seconds` of the next period,
        the next one too, so it opens on the second."""
        now = self.clock()
        opened = [self.open_sale(now)[0]]
        next_start = opened[0].ends_at
        if preload_seconds and next_start - now <= preload_seconds:
            opened.append(self.open_sale(next_start)[0])
        return opened

    def ensure_loaded(self, sale: Sale) -> bool:
        """Load the sale into Redis from PostgreSQL unless it is there, whole: opening and
        restoring (a sale, or the shards of it a node lost) are the same step. Returns whether
        this call loaded anything."""
        if not self.inventory.missing(sale):
            return False
        with self.inventory.exclusive(sale.sale_id, "load", ttl=120, wait=120) as held:
            if held is None:
                raise InventoryError(f"another loader kept sale {sale.sale_id} for 120 s")
            missing = self.inventory.missing(sale)
            if not missing:
                return False  # another loader finished while we waited
            # Sold items stay sold (with their codes, so retries work); codes handed out but
            # never bought answer `code_expired`; reservations only Redis knew become free.
            self.inventory.load_sale(
                sale,
                self.database.purchases_of(sale.sale_id),
                self.database.issued_claims(sale.sale_id),
                expire_ms=sale.ends_ms + KEEP_AFTER_END_MS,
                shards=missing,
            )
        log.info("sale loaded into redis", extra={"sale_id": sale.sale_id, "shards": missing})
        return True

    def restore(self) -> list[str]:
        """Reload every sale PostgreSQL has that is open now (or pre-loaded) but Redis lost."""
        now_ms = int(self.clock() * 1000)
        restored = []
        for at in (now_ms / 1000, now_ms / 1000 + self.settings.period):
            sale = self.database.get_sale(domain.sale_id_at(at, self.settings.period))
            if sale is not None and now_ms < sale.ends_ms and self.ensure_loaded(sale):
                restored.append(sale.sale_id)
        return restored

    # --- sweeping ---------------------------------------------------------------------------

    def ensure_partitions(self, start: float, end: float) -> None:
        """checkout_attempts has its day partitions from `start` to a day after `end` (epoch
        seconds); the days already seen by this process are not asked again. Opening a sale
        makes its first days, each sweep today's and tomorrow's."""
        first = datetime.fromtimestamp(start, UTC).date()
        days = (datetime.fromtimestamp(end, UTC).date() - first).days + 2
        wanted = {first + timedelta(days=n) for n in range(days)}
        if wanted <= self._partitioned:
            return
        self.database.ensure_attempt_partitions(first, days)
        self._partitioned |= wanted

    def sweep(self, max_batches: int = 100, wait_for_drain: float = 0.0) -> SweepReport:
        """wait_for_drain: seconds to wait for another drainer's lock on an outbox."""
        report = SweepReport(restored=self.restore())
        now_ms = int(self.clock() * 1000)
        self.ensure_partitions(now_ms / 1000, now_ms / 1000)
        for sale_id in sorted(self._outboxes(now_ms)):
            report.reclaimed += self.reclaim(sale_id, now_ms, max_batches)
            settled, voided = self.settle(sale_id, now_ms)
            report.settled += settled
            report.voided += voided
            report.drained += drain_sale(
                self.inventory, self.database, sale_id, max_batches, wait=wait_for_drain
            )
            self._forget_if_finished(sale_id, now_ms)
        report.closed = self.close_ended(now_ms)
        RECLAIMED.inc(report.reclaimed)
        return report

    def _outboxes(self, now_ms: int) -> set[str]:
        """Registered sales, plus this period's and the last one's: a Redis that lost the
        registry (restarted empty) still gets its newest outboxes drained."""
        period = self.settings.period
        recent = {domain.sale_id_at(now_ms / 1000 - back, period) for back in (0, period)}
        return self.inventory.registered_sales() | recent

    def reclaim(self, sale_id: str, now_ms: int, max_batches: int) -> int:
        """Return expired reservations to stock. Checkout already takes an expired reservation
        for free; this makes the items hash and the reserved count say so."""
        total = 0
        for shard in range(self.inventory.shard_count(sale_id)):
            for _ in range(max_batches):
                returned = self.inventory.reclaim(sale_id, now_ms, _CHUNK, shard)
                total += returned
                if returned < _CHUNK:
                    break
        return total

    def settle(self, sale_id: str, now_ms: int) -> tuple[int, int]:
        """Purchases left pending in Redis past the grace (a crashed worker, an unknown COMMIT
        outcome, a revert a retry prevented): confirm what PostgreSQL holds; void the rest in
        PostgreSQL, so no retry can commit them any more, then undo them in Redis (the item is
        free, the code expired: no client heard 200 for them, and none ever will).
        Returns (confirmed, voided)."""
        grace_ms = int(self.settings.pending_grace * 1000)
        stale = self.inventory.pending_since(sale_id, now_ms - grace_ms)
        self.inventory.settle_raised(sale_id, now_ms - grace_ms)
        if not stale:
            return 0, 0
        confirmed, voided = self.database.settle_codes(sale_id, stale)
        for code in confirmed:
            self.inventory.confirm(sale_id, code)
        # False when a second sweeper got there first: count only what we undid.
        undone = sum(self.inventory.release(sale_id, code) for code in voided)
        return len(confirmed), undone

    def _forget_if_finished(self, sale_id: str, now_ms: int) -> None:
        window = domain.sale_window(sale_id)
        if window is None or window[1] * 1000 + OUTBOX_LINGER_MS > now_ms:
            return
        self.inventory.forget_outbox(sale_id)

    def close_ended(self, now_ms: int) -> list[str]:
        """Record the final figures of sales that ended and have nothing left in flight."""
        closed = []
        for sale in self.database.sales_to_close(now_ms):
            if self.inventory.in_flight(sale.sale_id):
                continue  # settle and drain first; the next sweep closes it
            sold = self.database.close_sale(sale.sale_id)
            if sold is not None:  # None: a second sweeper closed it first
                log.info("sale closed", extra={"sale_id": sale.sale_id, "items_sold": sold})
                closed.append(sale.sale_id)
        return closed


def run_forever(
    step: Callable[[], object], interval: float, stop: Callable[[], bool], name: str
) -> None:
    """Run a job step on a timer; a failing store is logged and retried, never fatal."""
    while not stop():
        started = time.monotonic()
        try:
            step()
        except (InventoryError, DatabaseError) as error:
            log.warning("%s: store unavailable: %s", name, error)
        except Exception:
            log.exception("%s failed", name)
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
