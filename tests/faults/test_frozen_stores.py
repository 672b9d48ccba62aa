"""A store that stops answering without closing its connections (a frozen process, a network
partition): only the timeouts stand between the service and a hang."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg2
import redis
import requests

from flashsale.dev.servers import start_redis
from tests.support.crowd import (
    ITEMS,
    USER_LIMIT,
    Shoppers,
    Tally,
    check_sale,
    query,
    sale_id_of,
    sell_out,
    wait_settled,
)
from tests.support.processes import flashsale, serving

FROZEN_SECONDS = 4


def test_frozen_redis_gives_quick_503s_then_recovers(fault_env: dict[str, str], tmp_path: Path):
    """Redis is SIGSTOPped under load: its sockets stay open but nothing answers. Every
    request still gets an answer, 503 `unavailable`, within FLASHSALE_REDIS_TIMEOUT (0.5 s
    here), not a hang; when it resumes, the sale goes on and sells out exactly."""
    with start_redis(tmp_path / "redis", appendonly=True) as store:
        env = {**fault_env, "REDIS_URL": store.url}
        sale_id = sale_id_of(env)
        pid = redis.Redis.from_url(store.url).info("server")["process_id"]
        with serving(env, tmp_path, workers=2) as (base, _):
            shoppers = Shoppers(base, items=ITEMS, users=80, threads=8)
            with shoppers.running(timeout=50):
                assert shoppers.wait_until(lambda: shoppers.purchased() >= ITEMS // 3, 30)
                os.kill(pid, signal.SIGSTOP)
                try:
                    frozen_at = time.monotonic()
                    time.sleep(1)
                    # One more client, on its own: answered (not hung) with 503 unavailable.
                    probe = requests.post(
                        f"{base}/checkout", params={"user_id": "probe", "id": "1"}, timeout=15
                    )
                    time.sleep(FROZEN_SECONDS - 1)
                    during = shoppers.tally.since(frozen_at)
                finally:
                    os.kill(pid, signal.SIGCONT)
                assert probe.status_code == 503, probe.text
                assert probe.json()["error"]["code"] == "unavailable"
                assert during[("/checkout", "unavailable")] > 0, during
                assert not [
                    k for k in during if k[1] not in ("unavailable", "ok") and k[0] == "/purchase"
                ], during
            sell_out(shoppers, env, sale_id, ITEMS)
            check_sale(env, sale_id, shoppers.tally, sold=ITEMS, limit=USER_LIMIT)
        # Written straight into PostgreSQL while Redis was frozen, and filed under the sale.
        probe_attempt = "SELECT sale_id, outcome FROM checkout_attempts WHERE user_id = 'probe'"
        assert query(env, probe_attempt) == [(sale_id, "unavailable")]


def test_stuck_postgres_purchases_time_out_into_503_and_are_undone(
    fault_env: dict[str, str], tmp_path: Path
):
    """INSERTs into purchases are blocked (the test holds a lock on the table): after the
    statement timeout (2 s here) the purchase answers 503 `unavailable`, Redis undoes the sale
    (the server said the statement failed, so nothing was written), and once the lock goes the
    same code buys the item: no 200 for anything PostgreSQL does not hold."""
    env = {**fault_env, "FLASHSALE_CHECKOUT_TTL": "60"}
    sale_id = sale_id_of(env)
    with serving(env, tmp_path, workers=2) as (base, _):
        reserved = requests.post(
            f"{base}/checkout", params={"user_id": "u1", "id": "1"}, timeout=10
        )
        assert reserved.status_code == 200
        code = reserved.json()["code"]
        locker = psycopg2.connect(env["DATABASE_URL"])
        locker.cursor().execute("LOCK TABLE purchases IN ACCESS EXCLUSIVE MODE")
        try:
            stuck = requests.post(f"{base}/purchase", params={"code": code}, timeout=15)
        finally:
            locker.rollback()
            locker.close()
        assert stuck.status_code == 503, stuck.text
        assert stuck.json()["error"]["code"] == "unavailable"
        status = requests.get(f"{base}/sale/status", timeout=10).json()
        assert status["items_sold"] == 0  # undone in Redis: the reservation is back
        retried = requests.post(f"{base}/purchase", params={"code": code}, timeout=10)
        assert retried.status_code == 200, retried.text
        assert query(env, "SELECT count(*) FROM purchases") == [(1,)]
        tally = Tally()
        tally.checkouts.append(("u1", "1", 200, "ok", code))
        tally.purchases.append((code, 200, retried.json()))
        check_sale(env, sale_id, tally, sold=1, limit=USER_LIMIT)


def test_a_frozen_redis_decides_nothing_its_callers_gave_up_on(
    fault_env: dict[str, str], tmp_path: Path
):
    """Clients check out with one user id per request while Redis is SIGSTOPped for a few
    seconds and resumed. Resumed, Redis runs the calls queued meanwhile; they must decide
    nothing: every request is exactly one row, whose outcome is the one its client heard, and
    every reservation Redis holds is one a client was told of."""
    with start_redis(tmp_path / "redis", appendonly=True) as store:
        env = {**fault_env, "REDIS_URL": store.url, "FLASHSALE_CHECKOUT_TTL": "600"}
        sale_id = sale_id_of(env)
        pid = redis.Redis.from_url(store.url).info("server")["process_id"]
        heard: dict[str, tuple[str, str]] = {}  # user -> (outcome, code)
        lock = threading.Lock()
        stop = threading.Event()

        def client(number: int) -> None:
            rng = random.Random(number)
            with requests.Session() as http:
                for n in range(10_000):
                    if stop.is_set():
                        return
                    user = f"once-{number}-{n}"
                    try:
                        answer = http.post(
                            f"{base}/checkout",
                            params={"user_id": user, "id": str(rng.randint(1, ITEMS))},
                            timeout=15,
                        )
                    except requests.RequestException:
                        continue  # no answer heard: no claim on what was recorded
                    body = answer.json()
                    outcome = "ok" if answer.status_code == 200 else body["error"]["code"]
                    with lock:
                        heard[user] = (outcome, body.get("code", ""))

        with serving(env, tmp_path, workers=2) as (base, _):
            threads = [threading.Thread(target=client, args=(n,)) for n in range(12)]
            for thread in threads:
                thread.start()
            try:
                time.sleep(1.5)
                os.kill(pid, signal.SIGSTOP)
                time.sleep(3)
            finally:
                os.kill(pid, signal.SIGCONT)
            time.sleep(1.5)
            stop.set()
            for thread in threads:
                thread.join(30)
            wait_settled(env, sale_id)
            flashsale("sweep", env=env)  # a drain that meets a pod's row releases
        outcomes = Counter(outcome for outcome, _ in heard.values())
        assert outcomes["unavailable"] > 0 and outcomes["ok"] > 0, outcomes
        rows = query(
            env,
            "SELECT user_id, outcome, coalesce(code, '') FROM checkout_attempts"
            " WHERE user_id LIKE 'once-%%'",
        )
        per_user = Counter(user for user, _, _ in rows)
        assert not [u for u, n in per_user.items() if n > 1], "a request has two rows"
        recorded = {user: (outcome, code) for user, outcome, code in rows}
        for user, answer in heard.items():
            assert recorded.get(user) == answer, (
                f"{user}: heard {answer}, recorded {recorded.get(user)}"
            )
        told = {code for outcome, code in heard.values() if outcome == "ok"}
        items = redis.Redis.from_url(store.url, decode_responses=True).hvals(
            f"fs:{{sale:{sale_id}}}:items"
        )
        held = {state.split()[3] for state in items if state != "-"}
        assert held <= told, f"{len(held - told)} reservations nobody was told of"
