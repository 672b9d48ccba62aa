"""The names of a sale's keys in Redis.

Every key of a sale carries the hash tag `{sale:<id>}`, so each script touches one Cluster slot.

| key | type | holds |
| --- | --- | --- |
| `fs:{sale:ID}:meta` | hash | start, end, total, limit, seed, sold count; makes the sale live |
| `fs:{sale:ID}:items` | hash | item id -> state (codec.py: free, reserved, sold) |
| `fs:{sale:ID}:codes` | hash | code -> claim (codec.py) |
| `fs:{sale:ID}:reserved` | sorted set | item by reservation expiry (unexpired: above now) |
| `fs:{sale:ID}:user:<user>` | sorted set | the user's items by expiry, `+inf` once bought |
| `fs:{sale:ID}:pending` | sorted set | codes sold in Redis but not yet confirmed in PostgreSQL |
| `fs:{sale:ID}:outbox` | stream | checkout attempts on their way to PostgreSQL |
| `fs:{sale:ID}:bucket:u:<user>`, `:bucket:ip:<addr>` | string | token buckets |
| `fs:{sale:ID}:items:loading`, `:codes:loading` | hash | a sale being loaded, unpublished |
| `fs:{sale:ID}:lock:load`, `:lock:drain` | string | short locks of the loader and the drain |
| `fs:{sale:ID}:queue` | hash | the waiting room's counters (queue.lua) |
| `fs:{sale:ID}:queue:users`, `:queue:tickets` | hash | user -> ticket; ticket -> its record |
| `fs:{sale:ID}:queue:draw` | sorted set | tickets of pre-opening joiners, by a random draw |
| `fs:outboxes` | set | sale ids whose outboxes the sweep walks |
"""

from __future__ import annotations

from functools import lru_cache

# Sales whose outboxes may hold attempts; the sweep walks this set.
OUTBOX_REGISTRY = "fs:outboxes"


class SaleKeys:
    """Names of one sale's keys."""

    def __init__(self, sale_id: str):
        self.sale_id = sale_id
        self.prefix = prefix = f"fs:{{sale:{sale_id}}}:"
        self.meta = prefix + "meta"
        self.items = prefix + "items"
        self.codes = prefix + "codes"
        self.reserved = prefix + "reserved"
        self.pending = prefix + "pending"
        self.outbox = prefix + "outbox"
        self.items_staging = prefix + "items:loading"
        self.codes_staging = prefix + "codes:loading"
        self.load_lock = prefix + "lock:load"
        self.drain_lock = prefix + "lock:drain"
        self.queue = prefix + "queue"
        self.queue_users = prefix + "queue:users"
        self.queue_tickets = prefix + "queue:tickets"
        self.queue_draw = prefix + "queue:draw"
        # Scripts that learn the user only from a code build the user's keys from these.
        self.user_prefix = prefix + "user:"
        self.user_bucket_prefix = prefix + "bucket:u:"

    def user(self, user_id: str) -> str:
        return self.user_prefix + user_id

    def user_bucket(self, user_id: str) -> str:
        return self.user_bucket_prefix + user_id

    def ip_bucket(self, address: str) -> str:
        return f"{self.prefix}bucket:ip:{address}"


keys_for = lru_cache(maxsize=256)(SaleKeys)
