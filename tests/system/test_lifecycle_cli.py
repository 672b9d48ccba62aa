"""The lifecycle jobs as an operator or a CronJob runs them: the real console script against
real Redis and PostgreSQL. Opening twice, at an instant, ahead of time, and racing (processes
and threads); two sweepers racing next to live traffic; audit exit codes on a clean and on a
tampered sale; and a sweep that restores the sale Redis lost mid-sale (the app in this process
sells the rest)."""

from __future__ import annotations

import contextlib
import json
import queue
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import falcon.testing
import pytest
import redis

from flashsale import catalog
from flashsale.config import Settings
from flashsale.domain import SaleError
from flashsale.sale.drain import LOCK_SECONDS
from flashsale.sale.keeper import SaleKeeper
from flashsale.sale.service import SaleService
from flashsale.stores.inventory.keys import keys_for
from flashsale.wiring import build_database, build_inventory
from tests.support.api import checkout, error_code, purchase
from tests.support.processes import flashsale
from tests.support.service import Clock, assert_sweeps_clean
from tests.support.stores import sql


def said(result: subprocess.CompletedProcess) -> list[dict[str, Any]]:
    """The JSON lines a job printed."""
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


@pytest.fixture
def rdb(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@contextlib.contextmanager
def opened_by_the_cli(env: dict[str, str]) -> Iterator[tuple[str, SaleService]]:
    """A sale opened by `flashsale open-sale`, and a sale service on it for the test's traffic."""
    (opened,) = said(flashsale("open-sale", env=env))
    settings = Settings.from_env(env)
    service = SaleService(settings, build_inventory(settings), build_database(settings, 2))
    try:
        yield opened["sale_id"], service
    finally:
        service.database.close()


def spawn(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flashsale", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# --- the opener --------------------------------------------------------------------------------


def test_open_sale_twice_opens_one_sale(
    service_env: dict[str, str], migrated_db: str, rdb: redis.Redis
) -> None:
    first = said(flashsale("open-sale", env=service_env))
    second = said(flashsale("open-sale", env=service_env))
    assert len(first) == len(second) == 1
    assert first[0]["sale_id"] == second[0]["sale_id"]
    assert (first[0]["loaded"], second[0]["loaded"]) == (True, False)
    sale_id = first[0]["sale_id"]
    assert sql(migrated_db, "SELECT sale_id, total_items FROM sales") == [(sale_id, 50)]
    ((seed,),) = sql(migrated_db, "SELECT seed FROM sales")
    rows = sql(
        migrated_db, "SELECT item_id, name, image_url FROM items WHERE sale_id = %s", sale_id
    )
    assert len(rows) == 50
    # Names and images come from the sale's seed, so they can be derived again at any time.
    for item_id, name, image_url in rows:
        assert name == catalog.item_name(seed, item_id)
        assert image_url == catalog.image_path(sale_id, item_id)
    keys = keys_for(sale_id)
    assert rdb.hlen(keys.items) == 50
    assert set(rdb.hvals(keys.items)) == {"-"}
    assert rdb.hget(keys.meta, "sold") == "0"
    assert not rdb.exists(keys.items_staging)


def test_open_sale_at_an_instant_and_preloading_the_next(
    service_env: dict[str, str], migrated_db: str, rdb: redis.Redis
) -> None:
    env = {**service_env, "FLASHSALE_PERIOD": "3600"}
    opened = said(flashsale("open-sale", "--at", "2031-05-05T10:30:00Z", "--next", env=env))
    assert [line["sale_id"] for line in opened] == [
        "20310505T100000Z-3600",
        "20310505T110000Z-3600",
    ]
    assert opened[1]["preloaded"] is True and opened[1]["loaded"] is True
    # Late in its period, the opener opens that period's sale: the one already there.
    late = said(flashsale("open-sale", "--at", "2031-05-05T11:59:59.999Z", env=env))
    assert late == [
        {
            "command": "open-sale",
            "sale_id": "20310505T110000Z-3600",
            "total_items": 50,
            "loaded": False,
        }
    ]
    rows = sql(
        migrated_db,
        "SELECT sale_id, to_char(starts_at AT TIME ZONE 'UTC', 'HH24:MI'),"
        " to_char(ends_at AT TIME ZONE 'UTC', 'HH24:MI') FROM sales ORDER BY 1",
    )
    assert rows == [
        ("20310505T100000Z-3600", "10:00", "11:00"),
        ("20310505T110000Z-3600", "11:00", "12:00"),
    ]
    for sale_id, _, _ in rows:
        assert rdb.hlen(keys_for(sale_id).items) == 50
    bad = flashsale("open-sale", "--at", "not-a-time", env=env, check=False)
    assert bad.returncode == 2 and "RFC 3339" in bad.stderr, bad.stderr
    assert sql(migrated_db, "SELECT count(*) FROM sales") == [(2,)]


def test_two_opener_processes_racing_open_one_sale(
    service_env: dict[str, str], migrated_db: str, rdb: redis.Redis
) -> None:
    env = {**service_env, "FLASHSALE_ITEMS": "5000"}  # a load long enough to overlap
    procs = [spawn("open-sale", "--next", env=env) for _ in range(4)]
    lines = [said(finish(proc)) for proc in procs]
    current = Counter(line[0]["sale_id"] for line in lines)
    upcoming = Counter(line[1]["sale_id"] for line in lines)
    assert len(current) == len(upcoming) == 1
    assert sum(line[0]["loaded"] for line in lines) == 1
    assert sum(line[1]["loaded"] for line in lines) == 1
    rows = sql(
        migrated_db,
        "SELECT s.sale_id, count(i.item_id) FROM sales s JOIN items i USING (sale_id) GROUP BY 1",
    )
    assert sorted(rows) == sorted([(next(iter(current)), 5000), (next(iter(upcoming)), 5000)])
    for sale_id in (*current, *upcoming):
        assert rdb.hlen(keys_for(sale_id).items) == 5000


def test_opener_threads_racing_open_one_sale(
    settings: Settings, clock: Clock, migrated_db: str, rdb: redis.Redis
) -> None:
    settings = Settings.from_env(
        {
            "REDIS_URL": settings.redis_url,
            "DATABASE_URL": settings.database_url,
            "FLASHSALE_ITEMS": "3000",
            "FLASHSALE_PERIOD": "10000000",
        }
    )
    keepers = [
        SaleKeeper(settings, build_inventory(settings), build_database(settings, 2), clock=clock)
        for _ in range(6)
    ]
    barrier = threading.Barrier(len(keepers))
    results: list[tuple[Any, bool]] = []
    lock = threading.Lock()

    def open_one(keeper: SaleKeeper) -> None:
        barrier.wait()
        outcome = keeper.open_sale()
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=open_one, args=(k,)) for k in keepers]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for keeper in keepers:
            keeper.database.close()
    assert len(results) == len(keepers)
    assert len({sale for sale, _ in results}) == 1, "openers disagree on the sale (its seed)"
    assert sum(loaded for _, loaded in results) == 1
    sale = results[0][0]
    assert sql(migrated_db, "SELECT count(*) FROM items") == [(3000,)]
    assert rdb.hlen(keys_for(sale.sale_id).items) == 3000
    assert rdb.hget(keys_for(sale.sale_id).meta, "seed") == sale.seed


# --- two sweepers next to live traffic -----------------------------------------------------


def test_two_sweepers_racing_next_to_live_traffic(
    service_env: dict[str, str], migrated_db: str, rdb: redis.Redis
) -> None:
    """Every item is checked out once; about a third are abandoned. Two `flashsale sweep`
    processes run side by side the whole time. Between them they return each abandoned item
    exactly once, and every attempt lands in PostgreSQL once."""
    env = {
        **service_env,
        "FLASHSALE_ITEMS": "240",
        "FLASHSALE_USER_LIMIT": "1000",
        "FLASHSALE_CHECKOUT_TTL": "1",
    }
    (opened,) = said(flashsale("open-sale", env=env))
    sale_id = opened["sale_id"]
    settings = Settings.from_env(env)
    service = SaleService(settings, build_inventory(settings), build_database(settings, 8))
    todo: queue.Queue[str] = queue.Queue()
    for item in range(1, 241):
        todo.put(str(item))
    counts: Counter = Counter()
    lock = threading.Lock()
    traffic_done = threading.Event()

    def shopper(seed: int) -> None:
        rng = random.Random(seed)
        while True:
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            reservation = service.checkout(f"user{rng.randint(1, 40)}", item)
            outcome = "abandoned"
            if rng.random() >= 1 / 3:
                try:
                    service.purchase(reservation.code)
                    outcome = "bought"
                except SaleError as error:  # only if it took longer than the TTL
                    assert error.code == "code_expired"
            with lock:
                counts[outcome] += 1
            time.sleep(rng.uniform(0, 0.04))

    sweeps: list[dict[str, Any]] = []

    def sweeper() -> None:
        while not traffic_done.is_set():
            sweeps.extend(said(flashsale("sweep", env=env)))

    shoppers = [threading.Thread(target=shopper, args=(i,)) for i in range(4)]
    sweepers = [threading.Thread(target=sweeper) for _ in range(2)]
    try:
        for thread in sweepers + shoppers:
            thread.start()
        for thread in shoppers:
            thread.join()
        time.sleep(1.2)  # every reservation has expired now
    finally:
        traffic_done.set()
        for thread in sweepers:
            thread.join()
        service.database.close()
    # Two more sweeps side by side, after the traffic: they return what is left, once.
    final = [spawn("sweep", env=env) for _ in range(2)]
    for proc in final:
        sweeps.extend(said(finish(proc)))

    assert counts["bought"] + counts["abandoned"] == 240
    assert counts["abandoned"] > 30 and counts["bought"] > 100, counts
    assert len(sweeps) >= 4
    assert sum(sweep["reclaimed"] for sweep in sweeps) == counts["abandoned"]
    assert sum(sweep["drained"] for sweep in sweeps) >= 240

    keys = keys_for(sale_id)
    states = Counter(state[0] for state in rdb.hvals(keys.items))
    assert states == {"S": counts["bought"], "-": counts["abandoned"]}
    assert int(rdb.hget(keys.meta, "sold")) == counts["bought"]
    assert rdb.zcard(keys.reserved) == 0
    assert rdb.xlen(keys.outbox) == 0
    assert sql(migrated_db, "SELECT count(*) FROM purchases WHERE sale_id = %s", sale_id) == [
        (counts["bought"],)
    ]
    assert sql(
        migrated_db,
        "SELECT outcome, count(*) FROM checkout_attempts WHERE sale_id = %s GROUP BY 1",
        sale_id,
    ) == [("ok", 240)]
    audit = flashsale("audit", "--sale", sale_id, env=env, check=False)
    assert audit.returncode == 0, audit.stdout


def test_sweep_drains_past_a_lock_a_dead_sweeper_left(
    service_env: dict[str, str], migrated_db: str, rdb: redis.Redis
) -> None:
    """A sweeper whose Redis went away mid-drain (a failover) cannot release its lock. The
    lock expires within LOCK_SECONDS, and a `flashsale sweep` run waits it out: the run it
    reports drains every attempt rather than skipping the outbox."""
    with opened_by_the_cli(service_env) as (sale_id, service):
        for item in range(1, 6):
            service.checkout(f"holder{item}", str(item))
    keys = keys_for(sale_id)
    assert rdb.set(keys.drain_lock, "a-sweeper-that-died", px=int(LOCK_SECONDS * 1000), nx=True)

    (swept,) = said(flashsale("sweep", env=service_env))
    assert swept["drained"] == 5
    assert rdb.xlen(keys.outbox) == 0
    assert sql(
        migrated_db, "SELECT count(*) FROM checkout_attempts WHERE sale_id = %s", sale_id
    ) == [(5,)]


# --- the sweeper restores a sale Redis lost --------------------------------------------------


def test_restore_after_redis_flushed_mid_sale_sells_exactly_the_rest(
    keeper: SaleKeeper,
    client: falcon.testing.TestClient,
    clock: Clock,
    service_env: dict,
    migrated_db: str,
    redis_url: str,
) -> None:
    sale, _ = keeper.open_sale()
    n = sale.total_items
    bought: dict[str, dict] = {}
    for i in range(1, 21):  # 20 sold
        code = checkout(client, f"b{i % 7}", str(i)).json["code"]
        answer = purchase(client, code)
        assert answer.status_code == 200
        bought[code] = answer.json
    drained_hold = checkout(client, "h1", "21").json["code"]  # reserved, drained below
    keeper.sweep()
    redis_only = [checkout(client, f"h{i}", str(i)).json["code"] for i in range(22, 26)]

    flusher = redis.Redis.from_url(redis_url)
    flusher.flushdb()
    flusher.close()

    # Until the restore: checkouts hear that a store is away (this worker saw the sale open),
    # bought codes still answer from PostgreSQL.
    assert error_code(checkout(client, "x", "30")) == "unavailable"
    some_code, some_purchase = next(iter(bought.items()))
    assert purchase(client, some_code).json == some_purchase

    done = flashsale("sweep", env=service_env)  # its first step restores
    assert sale.sale_id in done.stdout
    assert keeper.restore() == []  # already there: restoring twice loads once

    status = client.simulate_get("/sale/status").json
    assert (status["items_sold"], status["items_reserved"], status["remaining_items"]) == (
        20,
        0,
        n - 20,
    )
    for code, answer in bought.items():  # sold stays sold, under the same code
        assert purchase(client, code).json == answer
    assert error_code(purchase(client, drained_hold)) == "code_expired"
    for code in redis_only:
        assert error_code(purchase(client, code)) in ("code_expired", "code_not_found")
    for i in range(1, 21):
        assert error_code(checkout(client, "thief", str(i))) == "item_unavailable"

    # Sell the rest: exactly the remaining items, including the ones only Redis held.
    sold_after = 0
    for i in range(1, n + 1):
        answer = checkout(client, f"r{i % 17}", str(i))
        if answer.status_code != 200:
            assert error_code(answer) == "item_unavailable"
            continue
        assert purchase(client, answer.json["code"]).status_code == 200
        sold_after += 1
    assert sold_after == n - 20
    assert error_code(checkout(client, "late", "1")) == "sold_out"
    assert sql(
        migrated_db,
        "SELECT count(*), count(DISTINCT item_id) FROM purchases WHERE sale_id = %s",
        sale.sale_id,
    ) == [(n, n)]
    for code, answer in bought.items():
        assert purchase(client, code).json == answer
    assert_sweeps_clean(keeper, sale)


# --- audit ---------------------------------------------------------------------------------


def run_audit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return flashsale("audit", *args, env=env, check=False)


def test_audit_passes_clean_and_fails_tampered(
    service_env: dict[str, str], migrated_db: str, rdb: redis.Redis
) -> None:
    with opened_by_the_cli(service_env) as (sale_id, service):
        for item in range(1, 11):
            service.purchase(service.checkout(f"buyer{item % 4}", str(item)).code)
        service.checkout("holder", "11")

    # Undrained attempts younger than the window are pending, not mismatches. (A drain interval
    # of 10 s makes the window 50 s, so a slow machine cannot age them past it.)
    young = run_audit({**service_env, "FLASHSALE_SWEEP_INTERVAL": "10"})
    assert young.returncode == 0, young.stdout
    assert "PENDING" in young.stdout and sale_id in young.stdout

    flashsale("sweep", env=service_env)
    clean = run_audit(service_env, "--sale", sale_id)
    assert clean.returncode == 0, clean.stdout
    assert "result: clean" in clean.stdout and "MISMATCH" not in clean.stdout
    assert "10 purchases" in clean.stdout

    # A purchase row deleted in PostgreSQL.
    (row,) = sql(
        migrated_db,
        "DELETE FROM purchases WHERE sale_id = %s AND item_id = '3'"
        " RETURNING sale_id, item_id, user_id, code, purchased_at",
        sale_id,
    )
    tampered = run_audit(service_env, "--sale", sale_id)
    assert tampered.returncode == 1
    assert "item 3 sold in Redis" in tampered.stdout, tampered.stdout
    sql(
        migrated_db,
        "INSERT INTO purchases (sale_id, item_id, user_id, code, purchased_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        *row,
    )
    assert run_audit(service_env, "--sale", sale_id).returncode == 0

    # A sold item's state changed in Redis.
    keys = keys_for(sale_id)
    state = rdb.hget(keys.items, "5")
    assert state.startswith("S ")
    rdb.hset(keys.items, "5", "-")
    tampered = run_audit(service_env, "--sale", sale_id)
    assert tampered.returncode == 1
    assert "item 5 bought in PostgreSQL but not sold in Redis" in tampered.stdout
    rdb.hset(keys.items, "5", state)
    assert run_audit(service_env, "--sale", sale_id).returncode == 0

    # The sold counter changed in Redis.
    rdb.hincrby(keys.meta, "sold", 1)
    tampered = run_audit(service_env, "--sale", sale_id)
    assert tampered.returncode == 1
    assert "sold counter 11 != 10" in tampered.stdout
    rdb.hincrby(keys.meta, "sold", -1)
    assert run_audit(service_env, "--sale", sale_id).returncode == 0

    unknown = run_audit(service_env, "--sale", "20000101T000000Z-3600")
    assert unknown.returncode == 2
