"""The encoding of an item's state, of a code's claim and of a sale's sold history in Redis, in
Python.

`scripts/item_state.lua` is the same encoding in Lua; the two are the only places that know it.
"""

from __future__ import annotations

from typing import NamedTuple

FREE = "-"
RESERVED = "R"
SOLD = "S"


class ItemState(NamedTuple):
    """An item as the items hash holds it: `kind` is FREE, RESERVED (until `at_ms`) or SOLD
    (at `at_ms`) to `user_id` under `code`."""

    kind: str
    at_ms: int = 0
    user_id: str = ""
    code: str = ""

    def encode(self) -> str:
        if self.kind == FREE:
            return FREE
        return f"{self.kind} {self.at_ms} {self.user_id} {self.code}"

    @classmethod
    def decode(cls, text: str | None) -> ItemState:
        if not text or text == FREE:
            return cls(FREE)
        kind, at_ms, user_id, code = text.split(" ")
        return cls(kind, int(at_ms), user_id, code)


class Claim(NamedTuple):
    """What the codes hash holds for a code: its item, its user, and when it expires (for a
    purchase restored from PostgreSQL, when it was bought; 0 for a code that can no longer be
    bought); `again` once a second checkout of the same user answered with it."""

    item_id: str
    user_id: str
    expires_ms: int
    again: bool = False

    def encode(self) -> str:
        text = f"{self.item_id} {self.user_id} {self.expires_ms}"
        return text + " again" if self.again else text

    @classmethod
    def decode(cls, text: str) -> Claim:
        item_id, user_id, expires_ms, *again = text.split(" ")
        return cls(item_id, user_id, int(expires_ms), bool(again))


# The sold history (GET /sale/history): the items sold in each bucket of the sale's period, a
# hash of bucket number -> count per shard. About 360 buckets a period, so a whole sale is one
# small hash (and one answer of a few kilobytes), fine enough to draw: whole seconds, at least 1.
HISTORY_BUCKETS = 360


def history_bucket_ms(starts_ms: int, ends_ms: int) -> int:
    """The bucket size of a sale: its period / 360, rounded up to whole seconds, at least 1 s
    (60 s: 1 s, an hour: 10 s), so a period has at most 360 buckets."""
    return max(1, -(-(ends_ms - starts_ms) // (HISTORY_BUCKETS * 1000))) * 1000


def history_bucket(starts_ms: int, ends_ms: int, at_ms: int) -> int:
    """The bucket of an instant of the sale: 0 from the opening."""
    return max(0, at_ms - starts_ms) // history_bucket_ms(starts_ms, ends_ms)
