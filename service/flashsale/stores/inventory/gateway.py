"""The live sale in Redis: `Inventory`, the one class of the service that speaks Redis, with a
named method for each thing the service, the jobs and the audit need and a typed answer for each
(answers.py).

Every decision is one Lua script run by SHA (`scripts/`, each KEYS and ARGV named at its top);
the few plain commands only read, tidy or move records. Key names and where a sale's data lives
are in keys.py, the item-state encoding in codec.py. A sale over K shards (docs/scaling.md) is
decided in two steps when the user's shard is not the item's; its callers never see that. The
class is assembled from its parts, one module each: decisions.py, queues.py, reads.py and
upkeep.py, on base.py.
"""

from __future__ import annotations

from flashsale.stores.inventory.base import InventoryError
from flashsale.stores.inventory.decisions import Decisions
from flashsale.stores.inventory.queues import Queues
from flashsale.stores.inventory.reads import Reads
from flashsale.stores.inventory.upkeep import Upkeep


class Inventory(Decisions, Queues, Reads, Upkeep):
    """Typed calls to the sales' scripts and keys (see the parts)."""


__all__ = ["Inventory", "InventoryError"]
