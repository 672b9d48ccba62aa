"""A sale driven by many real HTTP clients, and the checks a fault test ends with.

A `Shoppers` run is a pool of threads, each a client with its own keep-alive connection, that
check out random items for a crowd of users and buy what they reserve, until the sale is sold
out (or they are told to stop). Every answer is written down, so the end of a test can prove
from PostgreSQL's rows that nothing acknowledged was lost, nothing was sold twice and no user
got past the limit, whatever the fault in the middle did.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis
import requests

from flashsale.config import Settings
from flashsale.wiring import build_inventory
from tests.support.processes import flashsale
from tests.support.stores import sql

# The sale of the fault tests (their `fault_env` fixture, tests/faults/conftest.py).
ITEMS = 120
USER_LIMIT = 3

# A client waits this long for an answer: a server that hangs shows up as a timeout, which the
# checks below count as a failure (the service must answer, even if only with 503).
CLIENT_TIMEOUT = 15


@dataclass
class Tally:
    """Every answer the clients heard, thread-safe."""

    checkouts: list[tuple[str, str, int, str, str]] = field(default_factory=list)
    purchases: list[tuple[str, int, dict]] = field(default_factory=list)
    no_answer: Counter = field(default_factory=Counter)  # connection errors by route
    timeouts: Counter = field(default_factory=Counter)  # the server took CLIENT_TIMEOUT
    broken: list[str] = field(default_factory=list)  # answers a client could not read
    statuses: Counter = field(default_factory=Counter)  # (route, status, error code)
    timeline: list[tuple[float, str, str]] = field(default_factory=list)  # when, route, outcome
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, route: str, status: int, outcome: str) -> None:
        with self.lock:
            self.statuses[(route, status, outcome)] += 1
            self.timeline.append((time.monotonic(), route, outcome))

    def since(self, moment: float) -> Counter:
        """(route, outcome) of the answers heard after `moment` (time.monotonic())."""
        with self.lock:
            return Counter((r, o) for t, r, o in self.timeline if t >= moment)

    def seen(self, route: str, outcome: str) -> int:
        return sum(n for (r, _, o), n in self.statuses.items() if r == route and o == outcome)

    def acknowledged_purchases(self) -> dict[str, dict]:
        """code -> body of every purchase answered 200."""
        return {code: body for code, status, body in self.purchases if status == 200}


def _outcome(response: requests.Response) -> str:
    if response.status_code == 200:
        return "ok"
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return f"non-json-{response.status_code}"


class Shoppers:
    """Threads of real HTTP clients running a sale to the end."""

    def __init__(
        self,
        base: str,
        *,
        items: int,
        users: int,
        threads: int = 8,
        seed: int = 7,
        clicks: int = 1,
    ) -> None:
        """`clicks`: each purchase is sent this many times at once, as an impatient buyer's
        double-click does (each on its own connection)."""
        self.base = base
        self.clicks = clicks
        self.items = items
        self.users = [f"user-{n}" for n in range(users)]
        self.threads = threads
        self.tally = Tally()
        self.sold_out = threading.Event()
        self.stop = threading.Event()
        self.paused = threading.Event()
        self._idle = threading.Semaphore(0)
        self._bought: set[str] = set()
        self._random = random.Random(seed)
        self._workers: list[threading.Thread] = []

    # --- one client -------------------------------------------------------------------------

    def _post(
        self, session: requests.Session, route: str, **params: str
    ) -> requests.Response | None:
        try:
            answer = session.post(f"{self.base}{route}", params=params, timeout=CLIENT_TIMEOUT)
            if answer.status_code in (429, 503) and not answer.headers.get("Retry-After"):
                with self.tally.lock:
                    self.tally.broken.append(f"{route} {answer.status_code} without Retry-After")
            return answer
        except requests.Timeout:
            with self.tally.lock:
                self.tally.timeouts[route] += 1
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
            # Refused, reset, or cut off mid-answer (a killed worker): no answer was heard.
            with self.tally.lock:
                self.tally.no_answer[route] += 1
            time.sleep(0.05)  # the server is restarting or gone: do not spin
        return None

    def _client(self, number: int) -> None:
        try:
            self._shop(number)
        except Exception as error:  # a broken answer: the checks below report it
            with self.tally.lock:
                self.tally.broken.append(repr(error))
            raise

    def _shop(self, number: int) -> None:
        rng = random.Random(number)
        with requests.Session() as session:
            while not self.stop.is_set() and not self.sold_out.is_set():
                if self.paused.is_set():
                    self._idle.release()
                    while self.paused.is_set() and not self.stop.is_set():
                        time.sleep(0.02)
                    continue
                user = rng.choice(self.users)
                with self.tally.lock:
                    left = [str(i) for i in range(1, self.items + 1) if str(i) not in self._bought]
                if not left:
                    break
                item = rng.choice(left)
                answer = self._post(session, "/checkout", user_id=user, id=item)
                if answer is None:
                    continue
                outcome = _outcome(answer)
                body = answer.json() if outcome == "ok" else {}
                with self.tally.lock:
                    self.tally.checkouts.append(
                        (user, item, answer.status_code, outcome, body.get("code", ""))
                    )
                self.tally.count("/checkout", answer.status_code, outcome)
                if outcome == "sold_out":
                    self.sold_out.set()
                    break
                if outcome in ("unavailable", "no_active_sale"):
                    time.sleep(0.05)
                if outcome != "ok":
                    continue
                if self.clicks == 1:
                    self.buy(session, body["code"])
                else:
                    self._buy_clicking(body["code"])

    def buy(self, session: requests.Session, code: str) -> requests.Response | None:
        answer = self._post(session, "/purchase", code=code)
        if answer is None:
            return None
        outcome = _outcome(answer)
        body = (
            answer.json()
            if answer.headers.get("content-type", "").startswith("application/json")
            else {}
        )
        with self.tally.lock:
            self.tally.purchases.append((code, answer.status_code, body))
            if outcome == "ok":
                self._bought.add(body["item_id"])
        self.tally.count("/purchase", answer.status_code, outcome)
        return answer

    def _buy_clicking(self, code: str) -> None:
        def click() -> None:
            with requests.Session() as own:
                self.buy(own, code)

        clicks = [threading.Thread(target=click) for _ in range(self.clicks)]
        for thread in clicks:
            thread.start()
        for thread in clicks:
            thread.join(CLIENT_TIMEOUT + 5)

    # --- the crowd --------------------------------------------------------------------------

    def start(self) -> None:
        for number in range(self.threads):
            thread = threading.Thread(target=self._client, args=(number,), daemon=True)
            thread.start()
            self._workers.append(thread)

    def pause(self) -> None:
        """Returns once no client has a request in flight."""
        self.paused.set()
        for thread in self._workers:
            if thread.is_alive():
                self._idle.acquire(timeout=CLIENT_TIMEOUT + 5)

    def resume(self) -> None:
        self.paused.clear()

    def join(self, timeout: float) -> None:
        """Wait for the sale to end; stop the clients if it has not within `timeout` s."""
        deadline = time.monotonic() + timeout
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.stop.set()
        for thread in self._workers:
            thread.join(CLIENT_TIMEOUT + 5)

    @contextmanager
    def running(self, timeout: float = 60) -> Iterator[Shoppers]:
        self.start()
        try:
            yield self
        finally:
            self.join(timeout)

    def again(self, timeout: float) -> None:
        """Another round of the same crowd (the tally goes on), until sold out again."""
        self.sold_out.clear()
        self.stop.clear()
        self._workers = []
        self.start()
        self.join(timeout)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def purchased(self) -> int:
        with self.tally.lock:
            return len(self._bought)


# --- the stores, seen from the test ---------------------------------------------------------


def sale_id_of(env: dict[str, str]) -> str:
    result = flashsale("open-sale", env=env)
    return result.stdout.split('"sale_id": "')[1].split('"')[0]


def query(env: dict[str, str], statement: str, *args: object) -> list[tuple]:
    return sql(env["DATABASE_URL"], statement, *args)


def wait_settled(env: dict[str, str], sale_id: str, timeout: float = 30) -> None:
    """Until the sweeper has moved every attempt and settled every purchase of the sale (in
    each of its outboxes, for a sale over several shards)."""
    inventory = build_inventory(Settings.from_env(env))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                if not inventory.in_flight(sale_id):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
    finally:
        inventory.close()
    raise AssertionError(f"outbox or pending purchases of {sale_id} not settled in {timeout} s")


def sell_out(
    shoppers: Shoppers, env: dict[str, str], sale_id: str, items: int, rounds: int = 4
) -> None:
    """Demand is still there: a purchase a fault left half-way is settled by the sweeper after
    the pending grace, its item goes back to stock, and the crowd buys it. Until PostgreSQL
    holds every item (or `rounds` rounds went by)."""
    for _ in range(rounds):
        wait_settled(env, sale_id)
        sold = query(env, "SELECT count(*) FROM purchases WHERE sale_id = %s", sale_id)[0][0]
        if sold >= items:
            return
        shoppers.again(timeout=30)


def check_sale(
    env: dict[str, str], sale_id: str, tally: Tally, *, sold: int | None, limit: int
) -> None:
    """What every fault test ends with: counted rows, then `flashsale audit`."""
    print(f"answers: {dict(tally.statuses)}; no answer: {dict(tally.no_answer)}")
    wait_settled(env, sale_id)
    purchases = query(
        env, "SELECT item_id, user_id, code FROM purchases WHERE sale_id = %s", sale_id
    )
    items = Counter(item for item, _, _ in purchases)
    per_user = Counter(user for _, user, _ in purchases)
    assert not [i for i, n in items.items() if n > 1], "an item was sold twice"
    assert not {u: n for u, n in per_user.items() if n > limit}, "a user got past the limit"
    if sold is not None:
        assert len(purchases) == sold, f"{len(purchases)} sold, expected {sold}"

    # Every purchase answered 200 is in PostgreSQL, as answered.
    stored = {code: (item, user) for item, user, code in purchases}
    for code, body in tally.acknowledged_purchases().items():
        assert stored.get(code) == (body["item_id"], body["user_id"]), f"purchase {code} lost"

    # Every checkout answered (whatever the answer) has its attempt row, with that outcome.
    rows = query(
        env,
        "SELECT user_id, item_id, outcome, coalesce(code, '') FROM checkout_attempts"
        " WHERE sale_id = %s OR sale_id IS NULL",
        sale_id,
    )
    recorded = Counter((u, i, o) for u, i, o, _ in rows)
    answered = Counter((u, i, o) for u, i, _, o, _ in tally.checkouts)
    lost = answered - recorded
    assert not lost, f"{sum(lost.values())} answered checkouts have no attempt row: {lost}"
    codes = {c for _, _, o, c in rows if o == "ok"}
    assert {c for *_, o, c in tally.checkouts if o == "ok"} <= codes

    # No 200 for a purchase that did not happen, no hang, and the clients never saw a 500.
    assert not tally.timeouts, f"requests hung: {tally.timeouts}"
    assert not tally.broken, f"unreadable answers: {tally.broken}"
    assert not [
        k
        for k in tally.statuses
        if k[1] >= 500 and k[2] != "unavailable" and k[2] != "no_active_sale"
    ], tally.statuses

    audit = flashsale("audit", "--sale", sale_id, env=env, check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr
