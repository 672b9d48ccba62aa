"""The names of a sale's keys in Redis, and where a sale's items, users and records live.

A sale on one hash tag (FLASHSALE_REDIS_SHARDS=1) keeps every key under `{sale:<id>}`, so each
decision is one script on one Cluster slot. A sale over K shards keeps a home meta under
`{sale:<id>}` (its facts and its shards' tags) and each shard's keys under `{sale:<id>/<tag>}`:
items by their number, users and client addresses by a hash of their name.

| key (under a tag T) | type | holds |
| --- | --- | --- |
| `fs:{T}:meta` | hash | start, end, total, limit, seed, sold count; makes the sale live |
| `fs:{T}:items` | hash | item id -> state (codec.py: free, reserved, sold) |
| `fs:{T}:codes` | hash | code -> claim (codec.py) |
| `fs:{T}:reserved` | sorted set | item by reservation expiry (unexpired: above now) |
| `fs:{T}:user:<user>` | sorted set | the user's items by expiry, `+inf` once bought |
| `fs:{T}:pending` | sorted set | codes sold in Redis but not yet confirmed in PostgreSQL |
| `fs:{T}:raising` | sorted set | K > 1: `<code> <user> <item>` of each open raise to bought |
| `fs:{T}:raises` | hash | K > 1: `<user> <item>` -> open raises, the token's score after |
| `fs:{T}:outbox` | stream | checkout attempts on their way to PostgreSQL |
| `fs:{T}:history` | hash | bucket of the sale's period -> items sold in it (codec.py) |
| `fs:{T}:bucket:u:<user>`, `:bucket:ip:<addr>` | string | token buckets |
| `fs:{T}:items:loading`, `:codes:loading`, `:history:loading` | hash | a sale being loaded |
| `fs:{T}:lock:load`, `:lock:drain` | string | short locks of the loader and the drain |
| `fs:{sale:ID}:queue` | hash | the waiting room's counters (queue.lua), on the home tag |
| `fs:{sale:ID}:queue:users`, `:queue:tickets` | hash | user -> ticket; ticket -> its record |
| `fs:{sale:ID}:queue:draw` | sorted set | tickets of pre-opening joiners, by a random draw |
| `fs:outboxes` | set | sale ids whose outboxes the sweep walks |
"""

from __future__ import annotations

import zlib
from functools import lru_cache

# Sales whose outboxes may hold attempts; the sweep walks this set.
OUTBOX_REGISTRY = "fs:outboxes"


class SaleKeys:
    """Names of one sale's keys under one hash tag: the whole sale, or one of its shards."""

    def __init__(self, sale_id: str, shard_tag: str = ""):
        self.sale_id = sale_id
        tag = f"sale:{sale_id}/{shard_tag}" if shard_tag else f"sale:{sale_id}"
        self.prefix = prefix = f"fs:{{{tag}}}:"
        self.meta = prefix + "meta"
        self.items = prefix + "items"
        self.codes = prefix + "codes"
        self.reserved = prefix + "reserved"
        self.pending = prefix + "pending"
        self.raising = prefix + "raising"
        self.raises = prefix + "raises"
        self.outbox = prefix + "outbox"
        self.history = prefix + "history"
        self.items_staging = prefix + "items:loading"
        self.codes_staging = prefix + "codes:loading"
        self.history_staging = prefix + "history:loading"
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


keys_for = lru_cache(maxsize=1024)(SaleKeys)


class SaleLayout:
    """Where a sale's data lives: `home` holds its facts; `shards` hold its items, users and
    records (one shard, the home itself, for a sale on one hash tag)."""

    def __init__(self, sale_id: str, total: int, tags: tuple[str, ...] = ()):
        self.sale_id = sale_id
        self.total = total
        self.home = keys_for(sale_id)
        self.shards = [keys_for(sale_id, tag) for tag in tags] or [self.home]
        self.k = len(self.shards)

    def item_shard(self, item_id: str) -> int | None:
        """The shard of an item of the sale (ids are 1..N, dealt round the shards), or None
        when `item_id` names no item of the sale."""
        if not item_id.isascii() or not item_id.isdigit() or item_id[0] == "0":
            return None
        number = int(item_id)
        return (number - 1) % self.k if number <= self.total else None

    def user_shard(self, user_id: str) -> int:
        return zlib.crc32(user_id.encode()) % self.k if self.k > 1 else 0

    def address_shard(self, address: str) -> int:
        return zlib.crc32(address.encode()) % self.k if self.k > 1 else 0
