"""Moves checkout attempts from the per-sale Redis outboxes into PostgreSQL.

Read a batch from the start of the stream, insert it with its idempotency key, then trim the
stream up to the batch's last entry. A crash between the insert and the trim only means the
next drain inserts nothing new; a crash before the insert loses nothing because the entries are
still in the stream.
"""

from __future__ import annotations

import contextlib

from redis.exceptions import LockError, RedisError

from flashsale.domain import printable
from flashsale.inventory import Inventory, keys_for
from flashsale.metrics import DRAINED
from flashsale.records import AttemptRow, Database

BATCH = 1000
# The drain lock lives this long and is renewed with each batch: a drainer that lost its Redis
# connection mid-drain (a failover) cannot keep the others out for long.
LOCK_SECONDS = 5


def _row(sale_key: str, entry_id: str, fields: dict[str, str]) -> AttemptRow:
    return AttemptRow(
        attempt_key=f"{sale_key}/{entry_id}",
        sale_id=fields.get("s") or None,
        user_id=printable(fields.get("u")),
        item_id=printable(fields.get("i")),
        outcome=fields.get("o", "unknown"),
        code=fields.get("c") or None,
        created_ms=int(fields.get("t") or entry_id.split("-")[0]),
    )


def _after(entry_id: str) -> str:
    """The stream id right after `entry_id`. Trimming below it removes exactly the entries a
    read from the start returned: XADD only appends ids above the stream's last one, so an
    attempt recorded while the batch was being inserted sits above it and stays. One short
    command instead of XDEL of a thousand ids, and Redis frees whole stream nodes."""
    millis, sequence = entry_id.split("-")
    if int(sequence) == 2**64 - 1:  # the last id of its millisecond
        return f"{int(millis) + 1}-0"
    return f"{millis}-{int(sequence) + 1}"


def drain_sale(
    inventory: Inventory, database: Database, sale_id: str, max_batches: int, wait: float = 0.0
) -> int:
    """Drain one sale's outbox; returns the number of attempts moved.

    A short lock keeps two drainers from doing the same work twice; correctness does not
    depend on it (the idempotency key does that). `wait`: seconds to wait for a lock another
    drainer holds (the sweep job waits, so that a run it reports is a real drain; the pod's
    drainer loop does not, it comes back within a second anyway).
    """
    keys = keys_for(sale_id)
    client = inventory.client
    lock = client.lock(
        keys.drain_lock, timeout=LOCK_SECONDS, blocking=wait > 0, blocking_timeout=wait or None
    )
    if not lock.acquire():
        return 0
    moved = 0
    try:
        for _ in range(max_batches):
            entries = client.xrange(keys.outbox, count=BATCH)
            if not entries:
                break
            database.insert_attempts([_row(sale_id, eid, fields) for eid, fields in entries])
            client.xtrim(keys.outbox, minid=_after(entries[-1][0]), approximate=False)
            moved += len(entries)
            if len(entries) < BATCH:
                break
            with contextlib.suppress(LockError):  # lost it: the idempotency key still holds
                lock.reacquire()
    finally:
        # Expired during a long drain, or Redis went away: it times out by itself.
        with contextlib.suppress(RedisError):
            lock.release()
    DRAINED.inc(moved)
    return moved


def backlog(inventory: Inventory) -> int:
    """Attempts in every registered outbox, not yet in PostgreSQL."""
    client = inventory.client
    sale_ids = inventory.registered_sales()
    if not sale_ids:
        return 0
    pipe = client.pipeline(transaction=False)
    for sale_id in sale_ids:
        pipe.xlen(keys_for(sale_id).outbox)
    return sum(pipe.execute())
