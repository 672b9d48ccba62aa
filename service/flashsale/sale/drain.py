"""The drain: checkout attempts move from a sale's Redis outbox into PostgreSQL.

Read a batch from the start of the outbox, insert it with its idempotency key (the attempt's
name, chosen by the pod that answered it), then trim the outbox up to the batch's last entry. A
crash between the insert and the trim only means the next drain inserts nothing new; a crash
before the insert loses nothing because the entries are still in the outbox.

A row the pod already wrote for the same request wins: it answered `unavailable` because Redis's
answer came too late, and a reservation the outbox says that request made is released.
"""

from __future__ import annotations

from flashsale.domain import printable
from flashsale.metrics import DRAINED
from flashsale.stores.inventory import Inventory, OutboxEntry
from flashsale.stores.records import AttemptRow, Database

BATCH = 1000
# The drain lock lives this long and is renewed with each batch: a drainer that lost its Redis
# connection mid-drain (a failover) cannot keep the others out for long.
LOCK_SECONDS = 5


def _row(sale_id: str, entry: OutboxEntry) -> AttemptRow:
    return AttemptRow(
        # Entries written before attempts had names are named after their place in the outbox.
        attempt_key=entry.attempt_key or f"{sale_id}/{entry.entry_id}",
        sale_id=entry.sale_id,
        user_id=printable(entry.user_id),
        item_id=printable(entry.item_id),
        outcome=entry.outcome,
        code=entry.code,
        created_ms=entry.created_ms,
    )


def drain_sale(
    inventory: Inventory, database: Database, sale_id: str, max_batches: int, wait: float = 0.0
) -> int:
    """Drain a sale's outboxes (one, or the home's and each shard's of a sharded sale);
    returns the number of attempts moved."""
    return sum(
        drain_outbox(inventory, database, sale_id, part, max_batches, wait)
        for part in inventory.outbox_parts(sale_id)
    )


def drain_outbox(
    inventory: Inventory,
    database: Database,
    sale_id: str,
    part: int,
    max_batches: int,
    wait: float = 0.0,
) -> int:
    """Drain one outbox of a sale; returns the number of attempts moved.

    A short lock per outbox keeps two drainers from doing the same work twice (and lets the
    sweepers of several pods drain a sharded sale's outboxes side by side); correctness does not
    depend on it (the idempotency key does that). `wait`: seconds to wait for a lock another
    drainer holds (the sweep job waits, so that a run it reports is a real drain; the pod's
    sweeper does not, it comes back within a second anyway).
    """
    moved = 0
    with inventory.exclusive(sale_id, "drain", ttl=LOCK_SECONDS, wait=wait, part=part) as renew:
        if renew is None:
            return 0
        for _ in range(max_batches):
            entries = inventory.read_outbox(sale_id, BATCH, part)
            if not entries:
                break
            unanswered = database.insert_attempts([_row(sale_id, entry) for entry in entries])
            for code in unanswered:
                inventory.release(sale_id, code)
            inventory.trim_outbox(sale_id, through=entries[-1].entry_id, part=part)
            moved += len(entries)
            if len(entries) < BATCH:
                break
            renew()
    DRAINED.inc(moved)
    return moved
