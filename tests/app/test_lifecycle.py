"""The sale lifecycle in-process, on a fake clock: a whole sale with abandonment, the sweeper's
counters, rollover across a period boundary, a purchase racing its own expiry, and a restore
after Redis lost the live sale. Everything is checked by counting (Redis state, PostgreSQL rows,
the user's holdings); the CLI paths live in tests/system/test_lifecycle_cli.py, the drain's
arithmetic in tests/unit/test_lifecycle.py."""

from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import falcon.testing
import pytest
import redis

from flashsale import domain
from flashsale.config import Settings
from flashsale.metrics import RECLAIMED
from flashsale.sale.keeper import SaleKeeper
from flashsale.stores.inventory.keys import keys_for
from tests.support.api import Harness, Stack, checkout, error_code, purchase
from tests.support.service import Clock, assert_sweeps_clean
from tests.support.stores import no_deadline, sql

# --- helpers -------------------------------------------------------------------------------


def item_states(redis_url: str, sale_id: str) -> dict[str, str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return client.hgetall(keys_for(sale_id).items)
    finally:
        client.close()


def kinds(states: dict[str, str]) -> Counter:
    """How many items are free ("-"), reserved ("R") or sold ("S")."""
    return Counter(state[0] for state in states.values())


def reclaimed_metric() -> float:
    return RECLAIMED._value.get()


# --- a whole sale with abandonment ---------------------------------------------------------


def test_whole_sale_with_abandonment_sells_exactly_n(
    keeper: SaleKeeper,
    client: falcon.testing.TestClient,
    clock: Clock,
    migrated_db: str,
    redis_url: str,
) -> None:
    """A crowd where about a third of the checkouts are never purchased still sells exactly N:
    abandoned reservations expire and go back to stock (checkout does not wait for a sweep)."""
    sale, loaded = keeper.open_sale()
    assert loaded
    n = sale.total_items
    rng = random.Random(7)
    users = [f"user-{i}" for i in range(30)]
    bought: dict[str, dict] = {}  # code -> the purchase answer
    abandoned = 0
    lock = threading.Lock()

    def shopper(user: str) -> None:
        nonlocal abandoned
        for _ in range(4):
            item = str(rng.randint(1, n))
            answer = checkout(client, user, item)
            if answer.status_code != 200:
                assert error_code(answer) in ("item_unavailable", "user_limit_reached", "sold_out")
                continue
            with lock:
                walk_away = rng.random() < 1 / 3
                if walk_away:
                    abandoned += 1
            if walk_away:
                continue
            paid = purchase(client, answer.json["code"])
            assert paid.status_code == 200, paid.json
            with lock:
                bought[answer.json["code"]] = paid.json

    rounds = 0
    with ThreadPoolExecutor(8) as pool:
        while True:
            status = client.simulate_get("/sale/status")
            if status.status_code == 200 and status.json["remaining_items"] == 0:
                break
            rounds += 1
            assert rounds < 200, "the sale never sold out"
            list(pool.map(shopper, users))
            clock.advance(30)  # half a TTL: reservations of two rounds ago have expired

    assert abandoned > n / 10, "the crowd abandoned too few checkouts to prove anything"
    assert len(bought) == n
    rows = sql(
        migrated_db,
        "SELECT count(*), count(DISTINCT item_id) FROM purchases WHERE sale_id = %s",
        sale.sale_id,
    )
    assert rows == [(n, n)]
    assert kinds(item_states(redis_url, sale.sale_id)) == {"S": n}
    assert error_code(checkout(client, "late-comer", "1")) == "sold_out"
    # Buyers never exceeded the limit, in Redis and in PostgreSQL.
    per_user = sql(
        migrated_db,
        "SELECT max(n) FROM (SELECT count(*) AS n FROM purchases"
        " WHERE sale_id = %s GROUP BY user_id) x",
        sale.sale_id,
    )
    assert per_user[0][0] <= sale.user_limit

    assert_sweeps_clean(keeper, sale)


def test_late_checkout_of_expired_reservation_succeeds_before_any_sweep(
    keeper: SaleKeeper,
    client: falcon.testing.TestClient,
    clock: Clock,
    settings: Settings,
    migrated_db: str,
) -> None:
    sale, _ = keeper.open_sale()
    first = checkout(client, "alice", "7")
    assert first.status_code == 200
    assert error_code(checkout(client, "bob", "7")) == "item_unavailable"

    clock.advance(settings.checkout_ttl)  # exactly at expiry: the reservation is over
    late = checkout(client, "bob", "7")
    assert late.status_code == 200, late.json
    assert late.json["code"] != first.json["code"]
    assert error_code(purchase(client, first.json["code"])) == "code_expired"
    assert purchase(client, late.json["code"]).status_code == 200
    rows = sql(
        migrated_db,
        "SELECT user_id FROM purchases WHERE sale_id = %s AND item_id = '7'",
        sale.sale_id,
    )
    assert rows == [("bob",)]
    # The sweeper has nothing to return: the item was re-reserved and sold, not abandoned.
    assert keeper.sweep().reclaimed == 0


# --- the sweeper -----------------------------------------------------------------------------


def test_sweep_returns_exactly_the_abandoned_reservations(
    keeper: SaleKeeper,
    client: falcon.testing.TestClient,
    clock: Clock,
    settings: Settings,
    redis_url: str,
) -> None:
    sale, _ = keeper.open_sale()
    abandoned = [str(i) for i in range(1, 13)]
    kept = [str(i) for i in range(13, 19)]
    for position, item in enumerate(abandoned + kept):
        assert checkout(client, f"u{position}", item).status_code == 200
    clock.advance(settings.checkout_ttl / 2)
    # Checked out later: still reserved when the sweep runs.
    codes = {}
    for position, item in enumerate(kept):
        codes[item] = checkout(client, f"v{position}", item)
        assert codes[item].status_code == 409  # held by u*, unexpired
    before = reclaimed_metric()

    assert keeper.sweep().reclaimed == 0  # nothing has expired yet
    clock.advance(settings.checkout_ttl / 2)
    for position, item in enumerate(kept):  # these users come back and re-reserve: not abandoned
        assert checkout(client, f"w{position}", item).status_code == 200

    report = keeper.sweep()
    assert report.reclaimed == len(abandoned)
    assert reclaimed_metric() - before == len(abandoned)
    assert keeper.sweep().reclaimed == 0, "a second sweep returned something again"
    states = item_states(redis_url, sale.sale_id)
    assert all(states[item] == "-" for item in abandoned)
    assert all(states[item].startswith("R ") for item in kept)
    status = client.simulate_get("/sale/status").json
    assert status["items_reserved"] == len(kept)
    assert status["remaining_items"] == sale.total_items


def test_sweep_is_bounded_per_run(keeper: SaleKeeper, clock: Clock, migrated_db: str) -> None:
    """Each run moves at most max_batches batches of the outbox; the next run goes on."""
    sale, _ = keeper.open_sale()
    now_ms = int(clock() * 1000)
    for i in range(1500):
        keeper.inventory.record_attempt(
            sale.sale_id,
            "invalid_request",
            now_ms=now_ms,
            user_id=f"u{i}",
            item_id=None,
            attempt_key=f"a{i}",
        )
    assert keeper.sweep(max_batches=1).drained == 1000
    assert keeper.sweep(max_batches=1).drained == 500
    assert keeper.sweep(max_batches=1).drained == 0
    assert sql(
        migrated_db, "SELECT count(*) FROM checkout_attempts WHERE sale_id = %s", sale.sale_id
    ) == [(1500,)]


def test_attempts_recorded_during_a_drain_stay_for_the_next(
    keeper: SaleKeeper, clock: Clock, migrated_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checkouts go on while a batch is being inserted: what they append to the outbox is not
    removed with the batch, and the next drain moves it."""
    sale, _ = keeper.open_sale()
    now_ms = int(clock() * 1000)

    def record(count: int, prefix: str) -> None:
        for i in range(count):
            keeper.inventory.record_attempt(
                sale.sale_id,
                "invalid_request",
                now_ms=now_ms,
                user_id=f"{prefix}{i}",
                item_id=None,
                attempt_key=f"{prefix}{i}",
            )

    insert = keeper.database.insert_attempts

    def insert_while_checkouts_go_on(rows: Any) -> int:
        record(7, "during-")
        monkeypatch.setattr(keeper.database, "insert_attempts", insert)
        return insert(rows)

    record(20, "before-")
    monkeypatch.setattr(keeper.database, "insert_attempts", insert_while_checkouts_go_on)
    assert keeper.sweep().drained == 20
    assert len(keeper.inventory.read_outbox(sale.sale_id)) == 7
    assert keeper.sweep().drained == 7
    users = sql(
        migrated_db, "SELECT user_id FROM checkout_attempts WHERE sale_id = %s", sale.sale_id
    )
    assert sorted(user for (user,) in users) == sorted(
        [f"before-{i}" for i in range(20)] + [f"during-{i}" for i in range(7)]
    )


# --- rollover across a period boundary -----------------------------------------------------

PERIOD = 60


def short(**extra: str) -> dict[str, str]:
    """Settings of a short period, reservations of 20 s, and `extra`."""
    return {"FLASHSALE_PERIOD": str(PERIOD), "FLASHSALE_CHECKOUT_TTL": "20", **extra}


def test_rollover_closes_the_old_sale_and_opens_a_full_new_one(
    harness: Harness,
    migrated_db: str,
    redis_url: str,
) -> None:
    boundary = (1_900_000_000 // PERIOD + 1) * PERIOD
    clock = Clock(boundary - 30)
    s = harness.stack(clock=clock, **short())
    settings = s.settings
    old, _ = s.keeper.open_sale()
    assert old.ends_at == boundary

    sold = []
    for item in ("1", "2", "3"):
        code = checkout(s.api.client, f"buyer{item}", item).json["code"]
        assert purchase(s.api.client, code).status_code == 200
        sold.append(code)
    held = checkout(s.api.client, "holder", "4").json  # reserved, not yet bought
    assert domain.parse_rfc3339(held["expires_at"]) <= boundary
    clock.advance(25)  # 5 s before the end: the reservation (20 s TTL) would run past it
    late = checkout(s.api.client, "holder", "5").json
    assert domain.parse_rfc3339(late["expires_at"]) == boundary, "a reservation outlives its sale"

    clock.now = boundary  # the period is over; the opener has not run yet
    answer = checkout(s.api.client, "holder", "6")
    assert answer.status_code == 503
    assert error_code(answer) == "no_active_sale"
    assert int(answer.headers["Retry-After"]) >= 1
    assert error_code(purchase(s.api.client, late["code"])) == "code_expired"
    assert s.api.client.simulate_get("/sale/status").status_code == 503
    # A bought code stays a safe retry after the end.
    assert purchase(s.api.client, sold[0]).status_code == 200

    report = s.keeper.sweep()
    assert report.closed == [old.sale_id]
    closed = sql(
        migrated_db,
        "SELECT closed_at IS NOT NULL, items_sold FROM sales WHERE sale_id = %s",
        old.sale_id,
    )
    assert closed == [(True, 3)]
    assert s.keeper.sweep().closed == []  # closed once
    assert error_code(checkout(s.api.client, "holder", "6")) == "no_active_sale"

    new, loaded = s.keeper.open_sale()
    assert loaded and new.sale_id != old.sale_id and new.starts_at == boundary
    status = s.api.client.simulate_get("/sale/status").json
    assert status["sale_id"] == new.sale_id
    assert (status["items_sold"], status["items_reserved"], status["remaining_items"]) == (
        0,
        0,
        settings.items,
    )
    # Old codes, bought or not, are no use in the new sale; old items are not carried over.
    for code in (held["code"], late["code"]):
        assert error_code(purchase(s.api.client, code)) == "code_expired"
    for item in ("1", "4", "5"):  # sold or held in the old sale, free in the new one
        assert checkout(s.api.client, f"new-{item}", item).status_code == 200
    assert kinds(item_states(redis_url, new.sale_id)) == {"-": settings.items - 3, "R": 3}
    rows = sql(migrated_db, "SELECT sale_id, count(*) FROM items GROUP BY sale_id ORDER BY 1")
    assert rows == sorted([(old.sale_id, settings.items), (new.sale_id, settings.items)])
    assert sql(migrated_db, "SELECT count(*) FROM purchases WHERE sale_id = %s", new.sale_id) == [
        (0,)
    ]


def test_an_ended_sale_closes_only_once_its_purchases_are_settled(
    harness: Harness,
    migrated_db: str,
    redis_url: str,
) -> None:
    """Purchases a crashed worker left half-done hold the close back until the sweeper settles
    them: confirmed if PostgreSQL has the row, voided if not. Then the figures are final."""
    boundary = (1_900_000_000 // PERIOD + 1) * PERIOD
    clock = Clock(boundary - 30)
    s = harness.stack(clock=clock, **short())
    sale, _ = s.keeper.open_sale()
    inventory, now_ms = s.keeper.inventory, int(clock() * 1000)
    crashed = {}
    for item in ("1", "2"):
        code = checkout(s.api.client, f"user{item}", item).json["code"]
        sold = inventory.purchase(
            sale.sale_id,
            code,
            now_ms=now_ms,
            user_rate=0,
            ip_rate=0,
            client_ip="",
            deadline_ms=no_deadline(),
        )
        assert sold.kind == "sold"
        crashed[item] = domain.Purchase(sale.sale_id, item, f"user{item}", code, now_ms)
    # Item 2's worker got its INSERT through and died before confirming; item 1's died before.
    s.keeper.database.save_purchase(crashed["2"])
    code = checkout(s.api.client, "user3", "3").json["code"]
    assert purchase(s.api.client, code).status_code == 200

    clock.now = boundary
    report = s.keeper.sweep()
    assert (report.closed, report.settled, report.voided) == ([], 0, 0)  # still in flight
    assert sql(migrated_db, "SELECT closed_at FROM sales WHERE sale_id = %s", sale.sale_id) == [
        (None,)
    ]

    clock.advance(61)  # past the grace: no web request can still be writing them
    report = s.keeper.sweep()
    assert (report.closed, report.settled, report.voided) == ([sale.sale_id], 1, 1)
    assert sql(
        migrated_db,
        "SELECT closed_at IS NOT NULL, items_sold FROM sales WHERE sale_id = %s",
        sale.sale_id,
    ) == [(True, 2)]
    states = item_states(redis_url, sale.sale_id)
    assert states["2"].startswith("S ") and states["3"].startswith("S ")
    assert states["1"] == "-"  # voided: free again, its code expired
    assert purchase(s.api.client, crashed["2"].code).status_code == 200
    assert error_code(purchase(s.api.client, crashed["1"].code)) == "code_expired"


def test_preloaded_next_sale_opens_on_the_second(harness: Harness) -> None:
    boundary = (1_900_000_000 // PERIOD + 1) * PERIOD
    clock = Clock(boundary - 40)
    s = harness.stack(clock=clock, **short(FLASHSALE_PRELOAD_SECONDS="10"))
    settings = s.settings
    assert [sale.ends_at for sale in s.keeper.open_due(settings.preload_seconds)] == [boundary]

    clock.now = boundary - 5  # within the pre-load window: the next sale is loaded now
    current, upcoming = s.keeper.open_due(settings.preload_seconds)
    assert upcoming.starts_at == boundary
    answer = checkout(s.api.client, "early", "1")
    assert answer.status_code == 200 and answer.json["sale_id"] == current.sale_id

    clock.now = boundary  # no opener runs at the boundary: the pre-loaded sale is live already
    answer = checkout(s.api.client, "early", "2")
    assert answer.status_code == 200, answer.json
    assert answer.json["sale_id"] == upcoming.sale_id
    assert s.api.client.simulate_get("/sale/status").json["sale_id"] == upcoming.sale_id


def test_preload_window_longer_than_the_period_still_loads_the_very_next_sale(
    harness: Harness,
) -> None:
    # A 20 s demo period with the default 30 s window: the next sale, not the one after it.
    boundary = (1_900_000_000 // 20 + 1) * 20
    s = harness.stack(
        clock=Clock(boundary - 5), FLASHSALE_PERIOD="20", FLASHSALE_PRELOAD_SECONDS="30"
    )
    current, upcoming = s.keeper.open_due(s.settings.preload_seconds)
    assert (current.ends_at, upcoming.starts_at) == (boundary, boundary)


# --- a purchase racing its own expiry ------------------------------------------------------


def race(s: Stack, code: str) -> dict[str, Any]:
    """A purchase of the code and a sweep, released at once: the purchase's status and what
    the sweep returned."""
    barrier = threading.Barrier(2)
    result: dict[str, Any] = {}

    def buy() -> None:
        barrier.wait()
        result["purchase"] = purchase(s.api.client, code).status_code

    def sweep() -> None:
        barrier.wait()
        result["reclaimed"] = s.keeper.sweep().reclaimed

    threads = [threading.Thread(target=buy), threading.Thread(target=sweep)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


def test_purchase_racing_its_own_expiry_is_sold_or_returned_never_both(
    harness: Harness,
    migrated_db: str,
    redis_url: str,
) -> None:
    """Per trial, a purchase and a sweep run at once (two threads, a barrier), with the
    purchaser's clock and the sweeper's clock each a ms before, at, or a ms after the expiry."""
    service_clock = Clock((2_000_000_000 // 10_000_000) * 10_000_000 + 5_000_000)
    keeper_clock = Clock(service_clock.now)
    s = harness.stack(
        clock=service_clock,
        keeper_clock=keeper_clock,
        FLASHSALE_ITEMS="54",
        FLASHSALE_USER_LIMIT="1000",
    )
    settings = s.settings
    sale, _ = s.keeper.open_sale()
    ttl_ms = settings.checkout_ttl * 1000
    offsets = (-1, 0, 1)
    outcomes: Counter = Counter()
    sold_items, returned_items = set(), set()
    reclaimed = 0

    for trial in range(1, sale.total_items + 1):
        item = str(trial)
        answer = checkout(s.api.client, "racer", item)
        assert answer.status_code == 200
        expiry_ms = int(service_clock() * 1000) + ttl_ms
        p_off, s_off = offsets[trial % 3], offsets[(trial // 3) % 3]
        service_clock.now = (expiry_ms + p_off) / 1000
        keeper_clock.now = (expiry_ms + s_off) / 1000
        result = race(s, answer.json["code"])

        state = item_states(redis_url, sale.sale_id)[item]
        if result["purchase"] == 200:
            assert result["reclaimed"] == 0, f"trial {trial}: sold and returned"
            assert state.startswith("S "), state
            sold_items.add(item)
        else:
            assert result["purchase"] == 410
            if s_off >= 0:  # the sweep saw it expired: returned, once
                assert (state, result["reclaimed"]) == ("-", 1), (trial, state)
            else:  # expired but not yet swept: free for checkout all the same
                assert (state[0], result["reclaimed"]) == ("R", 0), (trial, state)
            returned_items.add(item)
        if p_off < 0 and s_off < 0:
            assert result["purchase"] == 200, "a purchase before expiry failed, unopposed"
        if p_off >= 0:
            assert result["purchase"] == 410, "a purchase at or after expiry went through"
        outcomes[(p_off, s_off, result["purchase"])] += 1
        reclaimed += result["reclaimed"]
        # The next trial starts after this one's expiry, on one clock again; what the trial
        # left reserved-but-expired is swept now, so each sweep's count belongs to one trial.
        keeper_clock.now = service_clock.now = max(service_clock.now, keeper_clock.now) + 1
        reclaimed += s.keeper.sweep().reclaimed

    states = item_states(redis_url, sale.sale_id)
    assert sold_items.isdisjoint(returned_items)
    assert len(sold_items) + len(returned_items) == sale.total_items
    assert reclaimed == len(returned_items), "the sweeper's count is not the items it returned"
    assert {i for i, st in states.items() if st.startswith("S ")} == sold_items
    assert kinds(states)["S"] + kinds(states)["-"] == sale.total_items
    rows = sql(migrated_db, "SELECT item_id FROM purchases WHERE sale_id = %s", sale.sale_id)
    assert {r[0] for r in rows} == sold_items and len(rows) == len(sold_items)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        held = client.zrangebyscore(keys_for(sale.sale_id).user("racer"), "inf", "inf")
        meta_sold = int(client.hget(keys_for(sale.sale_id).meta, "sold"))
    finally:
        client.close()
    assert set(held) == sold_items
    assert meta_sold == len(sold_items)
    # Both sides won some races where both were allowed to.
    contested = [k for k in outcomes if k[0] < 0 and k[1] >= 0]
    assert contested and sold_items and returned_items, outcomes


# --- recovery ------------------------------------------------------------------------------


def test_opener_restores_a_sale_redis_lost(
    keeper: SaleKeeper,
    client: falcon.testing.TestClient,
    redis_url: str,
) -> None:
    """Running the opener again after Redis lost the sale reloads the same sale, not a new one."""
    sale, _ = keeper.open_sale()
    code = checkout(client, "a", "1").json["code"]
    paid = purchase(client, code).json
    flusher = redis.Redis.from_url(redis_url)
    flusher.flushdb()
    flusher.close()
    again, loaded = keeper.open_sale()
    assert loaded and again == sale
    assert purchase(client, code).json == paid
    assert client.simulate_get("/sale/status").json["items_sold"] == 1
