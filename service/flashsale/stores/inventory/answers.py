"""The typed answers of the Redis gateway: what a script decided, as the service reads it."""

from __future__ import annotations

from typing import Literal, NamedTuple

# An item's state now, as GET /sale/stock tells it.
ItemStock = Literal["available", "reserved", "sold"]


class CheckoutAnswer(NamedTuple):
    """checkout.lua's decision. `sale_id` is the sale the attempt was filed under ('' if none).
    The outcome `late`: Redis ran a script after the caller's deadline, so it recorded nothing;
    on a sharded sale the user's step may have taken a limit token already, which expires."""

    outcome: str
    code: str
    expires_ms: int
    retry_ms: int
    sale_id: str


class PurchaseAnswer(NamedTuple):
    """purchase.lua's decision: `kind` is sold (now; `at_ms` is also its pending stamp), repeat
    (sold before under this code), sale_missing (Redis does not hold the sale), forbidden (held
    by another user than the requester), rate_limited, code_not_found, code_expired, or late
    (run after the caller's deadline, so not sold; on a sharded sale the user's step may have
    raised the item already, which the sweeper settles)."""

    kind: str
    item_id: str = ""
    user_id: str = ""
    at_ms: int = 0
    sale_id: str = ""
    retry_ms: int = 0


class SaleFigures(NamedTuple):
    """One consistent reading of a sale's counts (status.lua)."""

    sale_id: str
    starts_ms: int
    ends_ms: int
    total: int
    sold: int
    reserved: int
    backlog: int

    @property
    def remaining(self) -> int:
        return self.total - self.sold


class QueuePlace(NamedTuple):
    """Where a ticket stands (queue_join.lua, queue_ticket.lua). `outcome` is ok, rate_limited,
    no_active_sale or ticket_not_found; `position` is None before the draw is sealed at the
    opening; `wait_ms` is the ms until the ticket is due (or until a token, when rate limited);
    `newly` is how many admissions this call recorded (each is recorded by one call only)."""

    outcome: str
    ticket: str
    user_id: str
    position: int | None
    admitted: bool
    wait_ms: int
    pass_until_ms: int
    newly: int


class QueueLength(NamedTuple):
    """How many wait in a queue, and how many admissions this reading recorded."""

    waiting: int
    newly: int


class OutboxEntry(NamedTuple):
    """A checkout attempt in a sale's outbox, as its script recorded it."""

    entry_id: str
    attempt_key: str
    sale_id: str | None
    user_id: str | None
    item_id: str | None
    outcome: str
    code: str | None
    created_ms: int


def outbox_entry(entry_id: str, fields: dict[str, str]) -> OutboxEntry:
    """Stream fields: k attempt key, s sale, u user, i item, o outcome, c code, t ms (see
    checkout.lua)."""
    return OutboxEntry(
        entry_id,
        fields.get("k", ""),
        fields.get("s") or None,
        fields.get("u"),
        fields.get("i"),
        fields.get("o", "unknown"),
        fields.get("c") or None,
        int(fields.get("t") or entry_id.split("-")[0]),
    )


def queue_place(row: list) -> QueuePlace:
    outcome, ticket, user_id, position, admitted, wait_ms, pass_until, newly = row
    return QueuePlace(
        outcome,
        ticket,
        user_id,
        None if int(position) < 0 else int(position),
        bool(admitted),
        int(wait_ms),
        int(pass_until),
        int(newly),
    )
