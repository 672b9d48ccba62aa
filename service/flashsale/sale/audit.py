"""Compares a sale in Redis with its records in PostgreSQL and says what disagrees.

Records younger than the drain window are reported as pending: they are on their way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from flashsale.domain import Sale
from flashsale.stores.inventory import Inventory
from flashsale.stores.records import Database


@dataclass
class AuditReport:
    sale: Sale
    facts: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.mismatches

    def render(self) -> str:
        lines = [f"audit of sale {self.sale.sale_id}"]
        lines += [f"  {fact}" for fact in self.facts]
        lines += [f"  PENDING   {line}" for line in self.pending]
        lines += [f"  MISMATCH  {line}" for line in self.mismatches]
        lines.append(
            "result: " + ("clean" if self.clean else f"{len(self.mismatches)} mismatch(es)")
        )
        return "\n".join(lines)


def audit_sale(
    inventory: Inventory,
    database: Database,
    sale: Sale,
    *,
    now_ms: int,
    window_ms: int,
    pending_window_ms: int | None = None,
) -> AuditReport:
    """window_ms: how old an undrained attempt or unconfirmed purchase may be and still count
    as pending rather than as a mismatch; pending_window_ms, if given, for the purchases (a
    crashed worker's are settled only after the pending grace)."""
    report = AuditReport(sale)
    purchases = {p.item_id: p for p in database.purchases_of(sale.sale_id)}
    per_user = Counter(p.user_id for p in purchases.values())
    report.facts.append(
        f"PostgreSQL: {len(purchases)} purchases of {sale.total_items} items, "
        f"{len(per_user)} buyers"
    )

    if len(purchases) > sale.total_items:
        report.mismatches.append(f"oversold: {len(purchases)} purchases > {sale.total_items}")
    for user, count in per_user.items():
        if count > sale.user_limit:
            report.mismatches.append(f"user {user} bought {count} > limit {sale.user_limit}")

    # The outbox before PostgreSQL: an attempt drained in between is then found in the latter.
    outbox = inventory.read_outbox(sale.sale_id)
    in_outbox = {entry.code for entry in outbox if entry.outcome == "ok"}
    issued = database.issued_claims(sale.sale_id)
    for p in purchases.values():
        if p.code in issued:
            continue
        if p.code in in_outbox:  # on its way; a stale outbox is reported below
            report.pending.append(f"checkout attempt of purchased item {p.item_id} not drained")
        else:
            report.mismatches.append(f"purchase of item {p.item_id} has no ok checkout attempt")

    figures = inventory.figures(sale.sale_id, now_ms)
    if figures is None:
        report.facts.append("Redis: the sale is no longer held (expired or lost); PostgreSQL only")
        return report

    stale = [entry for entry in outbox if entry.created_ms < now_ms - window_ms]
    if stale:
        report.mismatches.append(
            f"{len(stale)} checkout attempts older than the drain window "
            "are still not in PostgreSQL"
        )
    if len(outbox) > len(stale):
        report.pending.append(
            f"{len(outbox) - len(stale)} recent checkout attempts not drained yet"
        )

    pending = inventory.pending(sale.sale_id)
    sold_in_redis = {
        item_id: (state.user_id, state.code)
        for item_id, state in inventory.sold_items(sale.sale_id).items()
    }
    report.facts.append(f"Redis: {len(sold_in_redis)} items sold, counter says {figures.sold}")
    if figures.sold != len(sold_in_redis):
        report.mismatches.append(
            f"Redis sold counter {figures.sold} != {len(sold_in_redis)} sold items"
        )

    for item_id, (user, code) in sold_in_redis.items():
        stored = purchases.get(item_id)
        if stored is not None and stored.code == code:
            continue
        if code in pending and pending[code] >= now_ms - (pending_window_ms or window_ms):
            report.pending.append(f"purchase of item {item_id} not yet confirmed")
        else:
            report.mismatches.append(
                f"item {item_id} sold in Redis (to {user}) but not in PostgreSQL"
            )
    for item_id, p in purchases.items():
        if sold_in_redis.get(item_id, (None, None))[1] != p.code:
            report.mismatches.append(f"item {item_id} bought in PostgreSQL but not sold in Redis")
    for user, count in per_user.items():
        held = inventory.bought_by(sale.sale_id, user)
        if held != count:
            report.mismatches.append(f"user {user}: {held} bought in Redis, {count} in PostgreSQL")

    codes = inventory.issued_codes(sale.sale_id)
    missing = codes - set(issued) - in_outbox
    if missing:
        report.mismatches.append(f"{len(missing)} codes handed out have no checkout attempt row")
    report.facts.append(f"codes handed out: {len(codes)} in Redis, {len(issued)} in PostgreSQL")
    return report
