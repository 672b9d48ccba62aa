"""The users of `flashsale crowd` (crowd.py): what one of them does next, over one keep-alive
HTTP connection of the standard library, and the tally of what they were answered.

A shopper arrives some time after a sale opens, wants a few items (never more than the per-user
limit), checks out random items the sale has available, buys most of what it reserved after a
moment's thought, abandons the rest (never buys them: their reservations expire), waits as long
as a Retry-After tells it, and leaves once it holds what it wanted or the sale is sold out. With
the waiting room on it joins the queue first and checks out with its pass.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from flashsale.domain import parse_rfc3339

TIMEOUT = 10.0  # seconds for one request
# Seconds a shopper thinks: between two checkouts, after an item someone else took, before it
# buys what it reserved (never past half of the reservation's time left).
THINK = (0.5, 2.0)
RETHINK = (0.1, 0.5)
DECIDE = (0.3, 2.0)
IDLE = (1.0, 2.0)  # a shopper with nothing to do looks again (a new sale?) after this long


@dataclass(frozen=True)
class Target:
    """The service the crowd drives: every request goes to this scheme, host and port, under this
    path; nothing a response says sends it anywhere else (it never follows a URL it is given)."""

    scheme: str
    host: str
    port: int
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Target:
        """An http:// or https:// URL of the service; ValueError, saying why, for anything else."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--url must be an http:// or https:// URL, got {url!r}")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError(f"--url takes no credentials, query or fragment, got {url!r}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ValueError(f"--url has no valid port: {url!r}") from None
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.prefix}"


@dataclass(frozen=True)
class Answer:
    """One response: status 0 when none came (the connection failed); `code` is `ok` or the
    error code of the body; `retry_after` in seconds when the response carried one."""

    status: int
    body: Any
    code: str
    retry_after: float | None = None


class Client:
    """One keep-alive connection to the target, opened again when it breaks. One thread's."""

    def __init__(self, target: Target, tally: Tally):
        self._target = target
        self._tally = tally
        self._connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def call(
        self, method: str, path: str, params: dict[str, str] | None = None, **headers: str
    ) -> Answer:
        url = self._target.prefix + path + (f"?{urlencode(params)}" if params else "")
        headers = {"Accept": "application/json", "User-Agent": "flashsale-crowd", **headers}
        # Checkout and purchase are safe to send again (the same user and item get the same
        # code; a code's purchase is the same purchase): a connection the server closed
        # between two requests is simply opened again.
        for attempt in (1, 2):
            try:
                connection = self._connect()
                connection.request(method, url, headers=headers)
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    self._tally.request(answered=False)
                    return Answer(0, None, "unreachable")
                continue
            self._tally.request(answered=True)
            return _answer(response, data)
        raise AssertionError("not reached")

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            kind = (
                http.client.HTTPSConnection
                if self._target.scheme == "https"
                else http.client.HTTPConnection
            )
            self._connection = kind(self._target.host, self._target.port, timeout=TIMEOUT)
        return self._connection


def _answer(response: http.client.HTTPResponse, data: bytes) -> Answer:
    body = None
    if (response.getheader("Content-Type") or "").startswith("application/json"):
        try:
            body = json.loads(data)
        except ValueError:
            body = None
    code = "ok" if response.status == 200 else f"http_{response.status}"
    if response.status != 200 and isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code", code))
    retry = response.getheader("Retry-After")
    return Answer(response.status, body, code, float(retry) if retry and retry.isdigit() else None)


class Tally:
    """What the crowd did and was answered, shared by every thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.answered = 0  # requests that got an HTTP response
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (checkout|purchase|queue, code)
        self.waits: Counter[str] = Counter()  # Retry-After honoured, by the code that sent it
        self.bought: Counter[str] = Counter()  # sale id -> items the crowd bought
        self.abandoned: Counter[str] = Counter()  # sale id -> reservations it never bought
        self.most_held = 0  # the most one user held at once in one sale (bought + reserved)

    def request(self, answered: bool) -> None:
        with self._lock:
            self.requests += 1
            self.answered += answered

    def outcome(self, kind: str, answer: Answer) -> None:
        with self._lock:
            self.outcomes[(kind, answer.code)] += 1
            if answer.retry_after is not None:
                self.waits[answer.code] += 1

    def count(self, what: Counter[str], sale_id: str) -> None:
        with self._lock:
            what[sale_id] += 1

    def held(self, items: int) -> None:
        with self._lock:
            self.most_held = max(self.most_held, items)

    def of(self, kind: str) -> dict[str, int]:
        with self._lock:
            found = {code: n for (k, code), n in self.outcomes.items() if k == kind}
        return dict(sorted(found.items(), key=lambda pair: (pair[0] != "ok", -pair[1])))


@dataclass
class SaleView:
    """What the crowd knows of the open sale (crowd.py refreshes it every second): None as
    `sale_id` when none is open."""

    sale_id: str | None = None
    ends_at: float = 0.0  # epoch seconds
    remaining: int = 0
    available: list[str] = field(default_factory=list)  # items available at the last look
    seen_at: float = 0.0  # monotonic: when the crowd first saw this sale open
    retry_after: float = 1.0  # when no sale is open: when to look again


@dataclass
class Shopper:
    """One user. `step` sends at most one request and says when the shopper acts again."""

    user_id: str
    rng: random.Random
    limit: int
    abandon: float
    waiting_room: bool
    sale_id: str | None = None
    wants: int = 0
    arrives: float = 0.0  # monotonic
    taken: int = 0  # checkouts that reserved an item for it in this sale (bought or not)
    # item -> until when it is held (epoch seconds; inf once bought)
    holding: dict[str, float] = field(default_factory=dict)
    to_buy: list[tuple[float, str, str]] = field(default_factory=list)  # (when, code, item)
    leaves: bool = False  # has what it wanted, or the sale has nothing for it
    ticket: str | None = None
    admission_pass: str | None = None

    def step(self, client: Client, view: SaleView, tally: Tally, spread: float) -> float:
        now = time.monotonic()
        if view.sale_id is None:
            return view.retry_after + self.rng.uniform(0, 1)
        if self.sale_id != view.sale_id:
            self._arrive(view, spread)
        if now < self.arrives:
            return self.arrives - now
        if self.to_buy and self.to_buy[0][0] <= now:
            return self._purchase(client, tally)
        if self.leaves or view.remaining == 0:
            return self.rng.uniform(*IDLE)
        if self.waiting_room and self.admission_pass is None:
            return self._queue(client, tally)
        if self.taken >= self.wants or self._held() >= self.limit:
            if self.to_buy:
                return max(0.05, self.to_buy[0][0] - now)
            self.leaves = self.taken >= self.wants
            return self.rng.uniform(*IDLE)
        return self._checkout(client, view, tally)

    def _arrive(self, view: SaleView, spread: float) -> None:
        """A new sale: this shopper comes to it some time in the first `spread` seconds after
        the crowd saw it open, wanting one item or a few."""
        self.sale_id = view.sale_id
        self.wants = min(self.limit, 1 + int(self.rng.expovariate(1.0)))
        self.arrives = view.seen_at + self.rng.uniform(0, spread)
        self.taken = 0
        self.holding.clear()
        self.to_buy.clear()
        self.leaves = False
        self.ticket = self.admission_pass = None

    def _held(self) -> int:
        now = time.time()
        return sum(1 for until in self.holding.values() if until > now)

    def _wait(self, answer: Answer, default: float) -> float:
        if answer.retry_after is not None:
            return answer.retry_after + self.rng.uniform(0, 0.5)
        return default

    def _checkout(self, client: Client, view: SaleView, tally: Tally) -> float:
        try:  # a random item of those the sale had available, one it does not hold
            picks = [self.rng.choice(view.available) for _ in range(5)]
        except IndexError:
            return self.rng.uniform(*IDLE)  # none available now: reservations may come back
        item = next((pick for pick in picks if pick not in self.holding), None)
        if item is None:
            return self.rng.uniform(*RETHINK)
        headers = {"X-Flashsale-Pass": self.admission_pass} if self.admission_pass else {}
        answer = client.call("POST", "/checkout", {"user_id": self.user_id, "id": item}, **headers)
        tally.outcome("checkout", answer)
        sale_id = self.sale_id or ""
        if answer.code == "ok":
            expires = parse_rfc3339(answer.body["expires_at"])
            self.taken += 1
            self.holding[item] = expires
            tally.held(self._held())
            if self.rng.random() < self.abandon:
                tally.count(tally.abandoned, sale_id)
            else:
                left = max(0.0, expires - time.time())
                think = min(self.rng.uniform(*DECIDE), left / 2)
                self.to_buy.append((time.monotonic() + think, answer.body["code"], item))
                self.to_buy.sort()
            return self.rng.uniform(*THINK)
        if answer.code == "item_unavailable":
            _discard(view.available, item)
            return self.rng.uniform(*RETHINK)
        if answer.code in ("sold_out", "user_limit_reached"):
            self.leaves = True
        elif answer.code == "not_admitted":
            self.admission_pass = None
        return self._wait(answer, self.rng.uniform(*THINK))

    def _purchase(self, client: Client, tally: Tally) -> float:
        _, code, item = self.to_buy[0]
        answer = client.call("POST", "/purchase", {"code": code})
        tally.outcome("purchase", answer)
        if answer.code == "ok":
            self.holding[item] = float("inf")
            tally.count(tally.bought, answer.body["sale_id"])
        elif answer.retry_after is not None or answer.status in (0, 503):
            return self._wait(answer, 1.0)  # try the same purchase again
        else:  # code_expired, code_not_found: the reservation is gone; it may try another
            self.holding.pop(item, None)
            self.taken -= 1
        self.to_buy.pop(0)
        return self.rng.uniform(*RETHINK)

    def _queue(self, client: Client, tally: Tally) -> float:
        """Join the waiting room's queue, or look where the ticket stands; once admitted, keep
        the pass for checkouts."""
        if self.ticket is None:
            answer = client.call("POST", "/queue", {"user_id": self.user_id})
        else:
            answer = client.call("GET", "/queue/" + quote(self.ticket, safe=""))
        tally.outcome("queue", answer)
        if answer.code != "ok":
            if answer.status == 404:
                self.ticket = None
            return self._wait(answer, 1.0)
        ticket = answer.body
        self.ticket = ticket["ticket"]
        if ticket.get("pass"):
            self.admission_pass = ticket["pass"]
            return 0.0
        if ticket.get("admitted"):
            return 0.0  # a join answers without the pass: the ticket has it
        return max(1.0, float(ticket.get("retry_after") or 1)) + self.rng.uniform(0, 0.5)


def _discard(items: list[str], item: str) -> None:
    """Forget an item the crowd now knows is taken (the list is the crowd's shared view; a
    lost race between two threads here only costs a wasted checkout)."""
    with contextlib.suppress(ValueError):
        items.remove(item)
