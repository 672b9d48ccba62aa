"""The sale as the API sees it: checkout and purchase (the decisions run in Redis, the records
land in PostgreSQL) and the reads.

This layer knows the rules of the API that span both stores (what to record when Redis
is away, when a purchase may be acknowledged) and nothing about HTTP.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from flashsale import catalog, domain
from flashsale.config import Settings
from flashsale.domain import (
    ANONYMOUS,
    Caller,
    Purchase,
    Reservation,
    Sale,
    SaleError,
    printable,
    retry_seconds,
)
from flashsale.metrics import CHECKOUTS, PURCHASES
from flashsale.sale.board import Board
from flashsale.sale.load import Load
from flashsale.sale.waiting_room import QueueTicket, WaitingRoom
from flashsale.stores.inventory import Inventory, InventoryError, SaleFigures
from flashsale.stores.records import AttemptRow, Database, DatabaseError, surely_not_written

log = logging.getLogger(__name__)

_STORE_ERRORS = (InventoryError, DatabaseError)


# Seconds a client is told to wait when no sale is open (see retry_after_no_sale).
NO_SALE_RETRY_SECONDS = 5


def _malformed(name: str) -> SaleError:
    """`invalid_request` for a parameter that is no token: one wording for every route."""
    return SaleError("invalid_request", f"`{name}` must be 1-64 characters of A-Z a-z 0-9 _ . -")


class SaleService:
    """The sale as the API sees it. Built once per worker; every method is safe for greenlets."""

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
        # Requests in flight in this worker: the HTTP layer counts them, _check_load sheds.
        self.load = Load(settings.max_inflight)
        self._registered: set[str] = set()
        # Sales this worker has seen open: if Redis no longer holds one of them mid-period, Redis
        # lost it (a restore is under way) and the answer is `unavailable`, not `no_active_sale`.
        self._seen_open: set[str] = set()
        self._sales: dict[str, Sale] = {}
        # A script that decides carries a deadline this far ahead: the client gives up on Redis
        # only after its socket timeout, so the script refuses to run once the client may have
        # given up, with half the timeout to spare for clocks that disagree.
        self._redis_budget_ms = max(1, int(settings.redis_timeout * 1000) // 2)
        self._checkout_outcomes = {code: CHECKOUTS.labels(code) for code in (*domain.ERRORS, "ok")}
        self._purchase_outcomes = {code: PURCHASES.labels(code) for code in (*domain.ERRORS, "ok")}
        # The queue admits by Redis's clock, one for every pod; a clock injected (tests) drives it.
        self.waiting_room = WaitingRoom(
            settings, inventory, clock=None if clock is time.time else clock
        )
        self._identity_on = settings.auth != "off"
        self.board = Board(inventory)

    # --- time -------------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def current_sale_id(self, now_ms: int) -> str:
        return domain.sale_id_at(now_ms / 1000, self.settings.period)

    def retry_after_no_sale(self, now_ms: int) -> int:
        """No sale is open: this period's is due any moment (an opener running late, a restore
        under way), else the next period's. Retry soon, and no later than the next period."""
        period_ms = self.settings.period * 1000
        return min(NO_SALE_RETRY_SECONDS, retry_seconds(period_ms - now_ms % period_ms))

    # --- the per-address limit of the reads --------------------------------------------------

    def admit(self, caller: Caller) -> None:
        """Spend a token of the client address's bucket for a read that does work (the status,
        the item pages); checkout and purchase spend from the same bucket inside their scripts.
        With Redis away the read passes: the limiter must not fail reads that do not need
        Redis."""
        rate = self.settings.rate_per_ip
        if rate <= 0 or not caller.address:
            return
        now = self.now_ms()
        try:
            wait = self.inventory.take_address_token(
                self.current_sale_id(now), caller.address, rate=rate, now_ms=now
            )
        except InventoryError:
            return
        if wait > 0:
            raise SaleError("rate_limited", retry_after=retry_seconds(wait))

    # --- checkout ---------------------------------------------------------------------------

    def checkout(self, user_id: Any, item_id: Any, caller: Caller = ANONYMOUS) -> Reservation:
        try:
            reservation = self._checkout(user_id, item_id, caller)
        except SaleError as error:
            self._checkout_outcomes[error.code].inc()
            raise
        self._checkout_outcomes["ok"].inc()
        return reservation

    def _checkout(self, user_id: Any, item_id: Any, caller: Caller) -> Reservation:
        now = self.now_ms()
        sale_id = self.current_sale_id(now)
        # The attempt's name, before any store decides it: whichever way its row is written
        # (the outbox, or straight into PostgreSQL), it is one row.
        attempt = domain.new_attempt_key()
        user_ok = self._user_id_ok(user_id)
        if not user_ok or not domain.valid_token(item_id):
            self._record_elsewhere(sale_id, attempt, "invalid_request", now, user_id, item_id)
            raise _malformed("user_id" if not user_ok else "id")
        try:  # what a pod refuses without a store, in the error table's order
            user_id = self._identify(user_id, caller)
            self._check_pass(user_id, sale_id, caller, now)
            self._check_load()
        except SaleError as refusal:
            self._record_elsewhere(sale_id, attempt, refusal.code, now, user_id, item_id)
            raise
        try:
            self._register_outbox(sale_id)
            answer = self.inventory.checkout(
                sale_id,
                user_id,
                item_id,
                now_ms=now,
                ttl_ms=self.settings.checkout_ttl * 1000,
                fresh_code=domain.new_code(sale_id),
                user_rate=self.settings.rate_per_user,
                ip_rate=self.settings.rate_per_ip if caller.address else 0,
                client_ip=caller.address,
                attempt_key=attempt,
                deadline_ms=self._deadline_ms(),
                seen_open=sale_id in self._seen_open,
            )
        except InventoryError as error:  # expected in an outage: one line, no stack trace
            log.warning("redis unreachable during checkout: %s", error)
            answer = None
        if answer is None or answer.outcome == "late":
            # Redis did not answer in time. It will not decide the call later (the script
            # checks its deadline), and if it did decide it but its answer was lost, this
            # row supersedes the outbox's and the reservation is released.
            self._record_directly(attempt, "unavailable", now, user_id, item_id)
            raise SaleError("unavailable")
        if answer.sale_id:
            self._seen(answer.sale_id)
        if answer.outcome == "ok":
            return Reservation(answer.code, answer.sale_id, item_id, answer.expires_ms)
        retry_after = None
        if answer.outcome == "rate_limited":
            retry_after = retry_seconds(answer.retry_ms)
        elif answer.outcome == "no_active_sale":
            retry_after = (
                retry_seconds(answer.retry_ms) if answer.retry_ms else self.retry_after_no_sale(now)
            )
        raise SaleError(answer.outcome, retry_after=retry_after)

    def _user_id_ok(self, user_id: Any) -> bool:
        """A well-formed user_id; with identity on, a missing one is the identity's (checked
        by _identify)."""
        return domain.valid_token(user_id) or (user_id is None and self._identity_on)

    def _identify(self, user_id: Any, caller: Caller) -> Any:
        """The user a request acts for (FLASHSALE_AUTH): `unauthenticated` or `forbidden`.
        With identity off, the user_id as given; on, the identity, which user_id must equal
        when it is given."""
        if not self._identity_on:
            return user_id
        if caller.unauthenticated or caller.user is None:
            raise SaleError("unauthenticated")
        if user_id is not None and user_id != caller.user:
            raise SaleError("forbidden", "`user_id` is not the user this request identifies")
        return caller.user

    def _check_pass(self, user_id: str, sale_id: str, caller: Caller, now: int) -> None:
        """With the waiting room on, a checkout needs a pass for this user and sale:
        `not_admitted`."""
        if self.settings.waiting_room and not self.waiting_room.admits(
            caller.admission_pass, sale_id, user_id, now
        ):
            raise SaleError("not_admitted")

    def _check_load(self) -> None:
        """More work in flight than the pod can answer in time: `overloaded`."""
        self.load.check()

    def _deadline_ms(self) -> int:
        """When a script sent now must no longer run: real time, not the sale's clock (tests
        move that), as Redis compares it with its own."""
        return int(time.time() * 1000) + self._redis_budget_ms

    def _seen(self, sale_id: str) -> None:
        if sale_id not in self._seen_open:
            if len(self._seen_open) > 16:  # one a period: start afresh now and then
                self._seen_open.clear()
            self._seen_open.add(sale_id)

    def _register_outbox(self, sale_id: str) -> None:
        """Before a sale's outbox gets its first record, the drainer must know it exists."""
        if sale_id not in self._registered:
            self.inventory.register_outbox(sale_id)
            self._registered.add(sale_id)

    def _record_elsewhere(
        self, sale_id: str, attempt: str, outcome: str, now: int, user_id: Any, item_id: Any
    ) -> None:
        """Record an attempt that checkout.lua did not see: via the outbox, or else directly
        (then, should Redis still run the record, the drain finds the row and adds nothing)."""
        user, item = printable(user_id), printable(item_id)
        try:
            self._register_outbox(sale_id)
            self.inventory.record_attempt(
                sale_id, outcome, now_ms=now, user_id=user, item_id=item, attempt_key=attempt
            )
        except InventoryError:
            self._record_directly(attempt, outcome, now, user, item)

    def _record_directly(
        self, attempt: str, outcome: str, now: int, user_id: Any, item_id: Any
    ) -> None:
        """Redis did not answer in time: the attempt goes straight to PostgreSQL before we
        answer, filed under the sale PostgreSQL has open now (Redis being away does not close
        it). If Redis did decide it after all and its row got drained first, that row is
        superseded, and a reservation it made (nobody was told its code) is released."""
        row = AttemptRow(
            attempt_key=attempt,
            sale_id=None,
            user_id=printable(user_id),
            item_id=printable(item_id),
            outcome=outcome,
            code=None,
            created_ms=now,
        )
        try:
            row = dataclasses.replace(row, sale_id=self._open_in_records(now))
            untold = self.database.insert_attempt(row)
        except DatabaseError:
            # Both stores are away: the log line is the record of last resort.
            log.error("attempt not stored, both stores unreachable: %s", row)
            return
        if untold is not None:
            try:
                self.inventory.release(domain.sale_of_code(untold) or "", untold)
            except InventoryError as error:  # it expires with its checkout's TTL
                log.warning("reservation %s nobody was told of left to expire: %s", untold, error)

    def _open_in_records(self, now: int) -> str | None:
        """The id of the sale open at `now` by PostgreSQL (cached like every sale's facts)."""
        sale_id = self.current_sale_id(now)
        sale = self._sales.get(sale_id) or self.database.get_sale(sale_id)
        if sale is None or not sale.open_at(now):
            return None
        self._remember(sale)
        return sale_id

    # --- the waiting room (waiting_room.py) --------------------------------------------------

    def join_queue(self, user_id: Any, caller: Caller = ANONYMOUS) -> QueueTicket:
        """POST /queue: a checkout's checks, in its order, then the queue taking joins now."""
        now = self.now_ms()
        if not self._user_id_ok(user_id):
            raise _malformed("user_id")
        user_id = self._identify(user_id, caller)
        self._check_load()
        return self.waiting_room.join(
            user_id, caller.address, now, no_sale_retry=self.retry_after_no_sale(now)
        )

    def queue_ticket(self, ticket: str, caller: Caller = ANONYMOUS) -> QueueTicket | None:
        """GET /queue/<ticket>; None when it is no ticket. One that is not even well formed
        still spends the address's token, as any read naming nothing does."""
        sale_id = domain.sale_of_code(ticket) if domain.valid_code(ticket) else None
        if sale_id is None:
            self.admit(caller)
            return None
        return self.waiting_room.look(ticket, sale_id, caller.address)

    def queue_length(self) -> int:
        """How many wait in the queue taking joins now (for the metrics)."""
        return self.waiting_room.length(self.now_ms())

    # --- purchase ---------------------------------------------------------------------------

    def purchase(self, code: Any, caller: Caller = ANONYMOUS) -> Purchase:
        try:
            purchase = self._purchase(code, caller)
        except SaleError as error:
            self._purchase_outcomes[error.code].inc()
            raise
        self._purchase_outcomes["ok"].inc()
        return purchase

    def _purchase(self, code: Any, caller: Caller) -> Purchase:
        if not domain.valid_code(code):
            raise SaleError("invalid_request", "`code` must be a checkout code")
        requester = self._identify(None, caller) or ""  # "": anyone holding the code may buy
        self._check_load()
        sale_id = domain.sale_of_code(code)
        if sale_id is None:
            raise SaleError("code_not_found")
        now = self.now_ms()
        try:
            answer = self.inventory.purchase(
                sale_id,
                code,
                now_ms=now,
                user_rate=self.settings.rate_per_user,
                ip_rate=self.settings.rate_per_ip if caller.address else 0,
                client_ip=caller.address,
                deadline_ms=self._deadline_ms(),
                requester=requester,
            )
        except InventoryError as error:
            log.warning("redis unreachable during purchase: %s", error)
            raise SaleError("unavailable") from None
        if answer.kind == "late":  # Redis did nothing: its clock was past our deadline
            raise SaleError("unavailable")
        if answer.kind == "sale_missing":
            self.admit(caller)  # a code naming a sale Redis does not hold costs PostgreSQL
            return self._purchase_from_records(code, sale_id, now, requester)
        if answer.kind == "rate_limited":
            raise SaleError(answer.kind, retry_after=retry_seconds(answer.retry_ms))
        if answer.kind in ("forbidden", "code_not_found", "code_expired"):
            raise SaleError(answer.kind)
        purchase = Purchase(sale_id, answer.item_id, answer.user_id, code, answer.at_ms)
        # The request that sold it holds its stamp: only it may revert it, and only untouched.
        stamp = answer.at_ms if answer.kind == "sold" else None
        return self._make_durable(purchase, stamp)

    def _make_durable(self, purchase: Purchase, stamp: int | None) -> Purchase:
        """Answer 200 only once PostgreSQL holds the purchase. If this request sold it and
        PostgreSQL surely did not record it, undo it in Redis, unless a retry of the same code
        touched it meanwhile (that retry may be committing it): then, as when the outcome is
        unknown, it stays pending and the sweeper settles it against PostgreSQL."""
        try:
            stored = self.database.save_purchase(purchase)
        except DatabaseError as error:
            if stamp is not None and surely_not_written(error):
                log.warning("purchase not stored, reverting %s: %s", purchase.code, error)
                self._revert(purchase.sale_id, purchase.code, stamp)
            elif stamp is not None:
                # It may have committed: reverting could free an item PostgreSQL holds as sold.
                # It stays pending; the sweeper settles it against PostgreSQL after the grace.
                log.warning("purchase outcome unknown, left pending %s: %s", purchase.code, error)
            raise SaleError("unavailable") from None
        if stored is None:
            # The sweeper gave up on this purchase (pending past the grace, not in PostgreSQL)
            # and voided the code: no purchase of it can commit any more.
            raise SaleError("code_expired")
        if stored.code != purchase.code:
            # PostgreSQL sold the item to another code while Redis was being restored: it wins.
            log.error(
                "item %s/%s already sold in PostgreSQL to another code",
                purchase.sale_id,
                purchase.item_id,
            )
            with contextlib.suppress(InventoryError):  # else the audit reports it
                self.inventory.adopt(purchase.sale_id, purchase.code, stored)
            raise SaleError("code_expired")
        # If this fails the purchase stays pending; the sweeper confirms it against PostgreSQL.
        with contextlib.suppress(InventoryError):
            self.inventory.confirm(purchase.sale_id, purchase.code)
        return stored

    def _revert(self, sale_id: str, code: str, stamp: int) -> None:
        try:
            if not self.inventory.revert(sale_id, code, stamp):
                log.warning("revert of %s left to the sweeper: a retry touched it", code)
        except InventoryError as error:
            log.warning("revert of %s left to the sweeper: %s", code, error)

    def _purchase_from_records(self, code: str, sale_id: str, now: int, requester: str) -> Purchase:
        """Redis no longer holds the sale: PostgreSQL answers for it (`requester` as for
        purchase.lua: when set, only the code's holder hears about it)."""
        try:
            stored = self.database.purchase_by_code(code)
            if stored is not None:
                if requester and stored.user_id != requester:
                    raise SaleError("forbidden")
                return stored
            sale = self.database.get_sale(sale_id)
            if sale is not None and now < sale.ends_ms:
                # The live sale is missing from Redis: it is being restored. Not the client's fault.
                raise SaleError("unavailable")
            holder = self.database.code_holder(code)
            if holder is not None and requester and holder != requester:
                raise SaleError("forbidden")
            if holder is not None:
                raise SaleError("code_expired")
        except DatabaseError:
            raise SaleError("unavailable") from None
        raise SaleError("code_not_found")

    # --- reads ------------------------------------------------------------------------------

    def snapshot(self) -> SaleFigures | None:
        """The open sale's figures straight from Redis (None when no sale is open)."""
        now = self.now_ms()
        try:
            figures = self.inventory.figures(self.current_sale_id(now), now)
        except InventoryError:
            raise SaleError("unavailable") from None
        if figures is None or not figures.starts_ms <= now < figures.ends_ms:
            return None
        return figures

    def status(self, caller: Caller = ANONYMOUS) -> dict[str, Any]:
        self._check_load()
        self.admit(caller)
        snapshot = self.snapshot()
        if snapshot is None:
            raise SaleError("no_active_sale", retry_after=self.retry_after_no_sale(self.now_ms()))
        return {
            "sale_id": snapshot.sale_id,
            "starts_at": domain.rfc3339(snapshot.starts_ms),
            "ends_at": domain.rfc3339(snapshot.ends_ms),
            "total_items": snapshot.total,
            "items_sold": snapshot.sold,
            "items_reserved": snapshot.reserved,
            "remaining_items": snapshot.remaining,
        }

    def _lookup(self, sale_id: str, caller: Caller) -> tuple[Sale | None, bool]:
        """A sale's fixed facts (cached: they never change), from Redis, else from PostgreSQL,
        and whether the caller's address token was spent: it is, before asking PostgreSQL, so
        made-up sale ids cannot load PostgreSQL past the per-address limit."""
        cached = self._sales.get(sale_id)
        if cached is not None:
            return cached, False
        spent = False
        try:
            sale = self.inventory.sale(sale_id)
            if sale is None:
                self.admit(caller)
                spent = True
                sale = self.database.get_sale(sale_id)
        except _STORE_ERRORS:
            raise SaleError("unavailable") from None
        if sale is not None:
            self._remember(sale)
        return sale, spent

    def _remember(self, sale: Sale) -> None:
        if len(self._sales) > 64:
            self._sales.clear()
        self._sales[sale.sale_id] = sale

    def items_page(
        self, limit: int, cursor: str | None, caller: Caller = ANONYMOUS
    ) -> dict[str, Any]:
        """GET /sale/items: items in position order (see _page)."""
        sale, start, stop, next_cursor = self._page(limit, cursor, caller)
        items = [
            {"id": item_id, "name": name, "image_url": path}
            for item_id, _, name, path in catalog.items_of(sale, start, stop)
        ]
        return {"sale_id": sale.sale_id, "items": items, "next_cursor": next_cursor}

    def _page(
        self, limit: int, cursor: str | None, caller: Caller
    ) -> tuple[Sale, int, int, str | None]:
        """The open sale, the positions start..stop-1 of a page and its next cursor, shared by
        the items and their stock. The cursor is the next position, bound to its sale. The
        address's token is spent after the parameters are checked: `invalid_request` (of an
        open sale's cursor) comes before `overloaded` and `rate_limited`, which come before
        `no_active_sale`."""
        now = self.now_ms()
        sale, spent = self._lookup(self.current_sale_id(now), caller)
        if sale is None or not sale.open_at(now):
            self._check_load()
            if not spent:
                self.admit(caller)
            raise SaleError("no_active_sale", retry_after=self.retry_after_no_sale(now))
        start = 1
        if cursor:
            owner, _, position = cursor.rpartition(":")
            start = domain.parse_count(position) if owner == sale.sale_id else None
            if start is None or not 1 <= start <= sale.total_items:
                raise SaleError("invalid_request", "`cursor` is not a cursor of the current sale")
        self._check_load()
        if not spent:
            self.admit(caller)
        stop = start + limit
        next_cursor = f"{sale.sale_id}:{stop}" if stop <= sale.total_items else None
        return sale, start, stop, next_cursor

    def history(self, caller: Caller = ANONYMOUS) -> dict[str, Any]:
        """GET /sale/history: the open sale's sold count since it opened (board.py)."""
        self.admit(caller)
        now = self.now_ms()
        answer = self.board.history(self.current_sale_id(now), now, self.snapshot)
        if answer is None:
            raise SaleError("no_active_sale", retry_after=self.retry_after_no_sale(now))
        return answer

    def stock(self, limit: int, cursor: str | None, caller: Caller = ANONYMOUS) -> dict[str, Any]:
        """GET /sale/stock: the state of each item of a page of /sale/items (board.py). Only
        the ids: no name nor image path is built for a page of states."""
        sale, start, stop, next_cursor = self._page(limit, cursor, caller)
        ids = [catalog.item_id_at(p) for p in range(start, min(stop, sale.total_items + 1))]
        return self.board.stock(sale.sale_id, ids, next_cursor, self.now_ms())

    def item_image(self, sale_id: str, item_id: str, caller: Caller = ANONYMOUS) -> str:
        """An item's picture; a sale only PostgreSQL can tell about costs an address token."""
        self._check_load()
        sale = self._lookup(sale_id, caller)[0] if domain.sale_window(sale_id) else None
        position = domain.parse_count(item_id)
        if (
            sale is None
            or position is None
            or not 1 <= position <= sale.total_items
            or catalog.item_id_at(position) != item_id  # "007" is not item "7"
        ):
            raise SaleError("item_not_found")
        return catalog.render_svg(sale.seed, item_id)

    def backlog(self) -> int:
        """Checkout attempts in Redis not yet in PostgreSQL (for the metrics)."""
        return self.inventory.backlog()

    def ready(self) -> dict[str, bool]:
        checks = {"redis": self.inventory.ping()}
        try:
            self.database.ping()
            checks["postgres"] = True
        except DatabaseError:
            checks["postgres"] = False
        return checks
