"""A purchase whose COMMIT reached PostgreSQL but whose answer never came back: the service
must not undo in Redis a sale that PostgreSQL may hold."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import requests

from tests.support.crowd import USER_LIMIT, Tally, check_sale, query, sale_id_of, wait_settled
from tests.support.processes import serving
from tests.support.stores import AnswerTrap


def commits_a_purchase(data: bytes, state: dict) -> bool:
    """The COMMIT of a transaction that inserted into purchases."""
    if b"INSERT INTO purchases" in data:
        state["insert"] = True
    if b"COMMIT" in data or b"ROLLBACK" in data:
        inserted, state["insert"] = state.get("insert", False), False
        return inserted and b"COMMIT" in data
    return False


@contextlib.contextmanager
def trapped(database_url: str) -> Iterator[tuple[AnswerTrap, str]]:
    url = urlsplit(database_url)
    trap = AnswerTrap((url.hostname, url.port), commits_a_purchase)
    try:
        yield trap, trap.url(database_url)
    finally:
        trap.close()


def test_a_purchase_with_an_unknown_outcome_is_left_pending_not_undone(
    fault_env: dict[str, str], tmp_path: Path
):
    """The client hears 503 (the service cannot know), Redis keeps the item sold and pending,
    and the sweeper confirms it against PostgreSQL after the grace. A retry with the same code
    gets the purchase. Undoing it at once (the old behaviour) would free an item that
    PostgreSQL holds as sold: the audit would report it, and so does this test."""
    env = {**fault_env, "FLASHSALE_CHECKOUT_TTL": "60"}
    sale_id = sale_id_of(env)
    with trapped(env["DATABASE_URL"]) as (trap, proxied):
        served = {**env, "DATABASE_URL": proxied}
        with serving(served, tmp_path, workers=1) as (base, _):
            reserved = requests.post(
                f"{base}/checkout", params={"user_id": "u1", "id": "7"}, timeout=10
            )
            assert reserved.status_code == 200
            code = reserved.json()["code"]
            trap.armed.set()
            answer = requests.post(f"{base}/purchase", params={"code": code}, timeout=15)
            assert trap.fired.is_set()
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "unavailable"
            # PostgreSQL did commit it ...
            assert query(env, "SELECT item_id, user_id, code FROM purchases") == [("7", "u1", code)]
            # ... and Redis still has it sold: not undone behind PostgreSQL's back.
            status = requests.get(f"{base}/sale/status", timeout=10).json()
            assert status["items_sold"] == 1, status
            # The sweeper settles it: PostgreSQL has the row, so it is confirmed.
            wait_settled(env, sale_id)
            assert requests.get(f"{base}/sale/status", timeout=10).json()["items_sold"] == 1
            # The buyer's retry gets the purchase.
            again = requests.post(f"{base}/purchase", params={"code": code}, timeout=10)
            assert again.status_code == 200, again.text
            assert again.json()["item_id"] == "7"
            tally = Tally()
            tally.checkouts.append(("u1", "7", 200, "ok", code))
            tally.purchases.append((code, 200, again.json()))
            check_sale(env, sale_id, tally, sold=1, limit=USER_LIMIT)
