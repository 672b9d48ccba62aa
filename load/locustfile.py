"""The sale crowd for locust: users check out random items, buy most, abandon about a third.

Against a running service (e.g. `FLASHSALE_RATE_PER_USER=0 flashsale dev`, port 8080):

    locust -f load/locustfile.py --headless --host http://127.0.0.1:8080 \
        -u 500 -r 100 --run-time 60s --only-summary

Each user has its own user_id, reads the item ids once (all users of a process share them, read
from /sale/items), then loops: checkout a random item; with probability FS_ABANDON (default
0.33) walk away, else think and purchase; think FS_THINK_MS (default 100 ms, at random up to
that) between steps. Requests are named by outcome ("/checkout ok", "/checkout
item_unavailable", ...), so the summary shows counts and percentiles by outcome; the answers
the contract defines (409, 403, 429...) count as successes, anything else as a failure. A user
that hears sold_out stops; one that hears user_limit_reached is replaced by a new shopper (a
fresh user_id). The run ends at --run-time (or when every user stopped).
"""

from __future__ import annotations

import os
import random
import threading
import uuid

from locust import FastHttpUser, between, task
from locust.exception import StopUser

ABANDON = float(os.environ.get("FS_ABANDON", "0.33"))
THINK_S = float(os.environ.get("FS_THINK_MS", "100")) / 1000
# Outcomes the contract defines: a correct answer, whatever its status.
EXPECTED = {
    "ok",
    "item_unavailable",
    "user_limit_reached",
    "sold_out",
    "rate_limited",
    "code_expired",
    "no_active_sale",
}

_items: list[str] = []
_items_lock = threading.Lock()


def _outcome(response) -> str:
    if response.status_code == 200:
        return "ok"
    try:
        return response.json()["error"]["code"]
    except Exception:
        return f"http_{response.status_code}"


class Shopper(FastHttpUser):
    wait_time = between(0, THINK_S)

    def on_start(self) -> None:
        self.user_id = f"locust-{uuid.uuid4().hex[:12]}"
        self.bought = 0
        with _items_lock:
            if not _items:
                _items.extend(self._read_items())

    def _read_items(self) -> list[str]:
        """Every item id of the current sale, page by page."""
        ids: list[str] = []
        cursor = ""
        while True:
            url = "/sale/items?limit=1000" + (f"&cursor={cursor}" if cursor else "")
            page = self.client.get(url, name="/sale/items").json()
            ids += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                return ids

    def _post(self, path: str, name: str) -> tuple[str, dict]:
        with self.client.post(path, name=name, catch_response=True) as response:
            outcome = _outcome(response)
            response.request_meta["name"] = f"{name} {outcome}"
            if outcome in EXPECTED:
                response.success()
            else:
                response.failure(f"{name}: {outcome}")
            body = response.json() if outcome == "ok" else {}
        return outcome, body

    @task
    def shop(self) -> None:
        item = random.choice(_items)
        outcome, body = self._post(f"/checkout?user_id={self.user_id}&id={item}", "/checkout")
        if outcome == "sold_out":
            raise StopUser()
        if outcome == "user_limit_reached":
            # This shopper is done; a new one takes the place, so the crowd keeps its size.
            self.user_id = f"locust-{uuid.uuid4().hex[:12]}"
            return
        if outcome != "ok" or random.random() < ABANDON:
            return
        self.wait()  # think before paying
        outcome, _ = self._post(f"/purchase?code={body['code']}", "/purchase")
        if outcome == "ok":
            self.bought += 1
