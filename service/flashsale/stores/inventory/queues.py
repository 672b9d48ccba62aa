"""The waiting room's queue of a sale, on its home tag (scripts queue_*.lua)."""

from __future__ import annotations

import time

from flashsale.stores.inventory.answers import (
    QueueLength,
    QueuePlace,
    queue_place,
)
from flashsale.stores.inventory.base import (
    InventoryBase,
)
from flashsale.stores.inventory.keys import keys_for


class Queues(InventoryBase):
    """Joins, looks and the queue's length; the address's bucket of a sharded sale first."""

    def queue_join(
        self,
        sale_id: str,
        user_id: str,
        *,
        fresh_ticket: str,
        draw: int,
        now_ms: int | None,
        window_ms: tuple[int, int],
        rate_milli: int,
        user_rate: float,
        ip_rate: float,
        client_ip: str,
        expire_ms: int,
    ) -> QueuePlace:
        """Join the sale's queue, or find the user's ticket again (queue_join.lua)."""
        keys = keys_for(sale_id)
        wait, ip_rate = self._spend_address_first(sale_id, client_ip, ip_rate, now_ms)
        if wait:
            return QueuePlace("rate_limited", "", user_id, None, False, wait, 0, 0)
        return queue_place(
            self._eval(
                "queue_join",
                [
                    keys.queue,
                    keys.queue_users,
                    keys.queue_tickets,
                    keys.queue_draw,
                    keys.meta,
                    keys.user_bucket(user_id),
                    keys.ip_bucket(client_ip),
                ],
                [
                    user_id,
                    fresh_ticket,
                    draw,
                    "" if now_ms is None else now_ms,
                    *window_ms,
                    rate_milli,
                    user_rate,
                    ip_rate,
                    expire_ms,
                ],
            )
        )

    def queue_ticket(
        self,
        sale_id: str,
        ticket: str,
        *,
        now_ms: int | None,
        window_ms: tuple[int, int],
        rate_milli: int,
        ip_rate: float,
        client_ip: str,
        pass_ms: int,
    ) -> QueuePlace:
        """Where a ticket stands, and its pass's expiry once admitted (queue_ticket.lua)."""
        keys = keys_for(sale_id)
        wait, ip_rate = self._spend_address_first(sale_id, client_ip, ip_rate, now_ms)
        if wait:
            return QueuePlace("rate_limited", ticket, "", None, False, wait, 0, 0)
        return queue_place(
            self._eval(
                "queue_ticket",
                [keys.queue, keys.queue_tickets, keys.queue_draw, keys.ip_bucket(client_ip)],
                [
                    ticket,
                    "" if now_ms is None else now_ms,
                    *window_ms,
                    rate_milli,
                    ip_rate,
                    pass_ms,
                ],
            )
        )

    def _spend_address_first(
        self, sale_id: str, client_ip: str, rate: float, now_ms: int | None
    ) -> tuple[int, float]:
        """(ms to wait, else 0; the address rate the queue's script applies). A sharded sale's
        address bucket lives on its own shard, not with the queue's keys: it is spent here
        first and the script's is off. The layout is looked up once, and only for a rate."""
        if not rate:
            return 0, rate
        layout = self.layout(sale_id)
        if layout.k == 1:
            return 0, rate
        if not client_ip:
            return 0, 0
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return self._take_address_token(layout, client_ip, rate, now), 0

    def queue_length(
        self, sale_id: str, *, now_ms: int | None, window_ms: tuple[int, int], rate_milli: int
    ) -> QueueLength:
        """How many wait in the sale's queue (queue_length.lua)."""
        keys = keys_for(sale_id)
        waiting, newly = self._eval(
            "queue_length",
            [keys.queue, keys.queue_draw],
            ["" if now_ms is None else now_ms, *window_ms, rate_milli],
        )
        return QueueLength(int(waiting), int(newly))
