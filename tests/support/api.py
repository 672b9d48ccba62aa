"""The app in this process on the test's servers and fake clock, through a harness that holds
the app to its documents: every response is checked against /openapi.json, and every checkout
sent is written down, to be looked for as a row of `checkout_attempts` at the end.

    harness.stack(**env) -> Stack   # a service, a keeper and the app, on these settings
    stack.open()                    # the sale of now, opened by the keeper
    stack.api.checkout(user, item)  # a checkout through the app, checked and recorded
    harness.assert_attempts_recorded(stack.keeper)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

import falcon
import falcon.testing
import pytest

from flashsale import domain
from flashsale.config import Settings
from flashsale.domain import Sale
from flashsale.sale.keeper import SaleKeeper
from flashsale.sale.service import SaleService
from flashsale.web.app import create_app
from flashsale.wiring import build_database, build_inventory
from tests.support.openapi import check_response
from tests.support.service import Clock
from tests.support.stores import flush_redis, sql

Pairs = list[tuple[str, str]]

# The layouts of a sale's keys that the contract's tests run on, each test on every one.
LAYOUTS = ("one tag", "3 shards", "3 shards on a cluster")

# Each passes str.isdigit() or int() somewhere, or looks like a number to a person.
NUMBER_LOOKALIKES = [
    "\u00b2",  # superscript two: isdigit(), but int() raises
    "\u0661\u0660",  # Arabic-Indic 10: int() reads it as 10
    "\u0967\u0966",  # Devanagari 10
    "\uff11\uff10",  # fullwidth 10
    "\U0001d7cf\U0001d7ce",  # mathematical bold 10
    "\u2469",  # circled ten
    "\u00b9\u2070",  # superscript 10
    "10\n",
    " 10",
    "+10",
    "-0",
    "1_0",
    "0x10",
    "1e2",
    "1.0",
    "",
    "9" * 19,
]


def on_layout(request: pytest.FixtureRequest, service_env: dict[str, str]) -> dict[str, str]:
    """The environment of the layout `request.param` names: a sale kept under one hash tag, a
    sale over three shards of one Redis, or over three shards of a three-primary Redis Cluster
    (the session's `redis_cluster`, emptied)."""
    if request.param == "one tag":
        return service_env
    env = {**service_env, "FLASHSALE_REDIS_SHARDS": "3"}
    if request.param == "3 shards on a cluster":
        cluster = request.getfixturevalue("redis_cluster")
        env |= {"REDIS_URL": cluster.url, "FLASHSALE_REDIS_CLUSTER": "on"}
        flush_redis(Settings.from_env(env))
    return env


def parse_time(text: str) -> float:
    """An RFC 3339 time of the API (UTC, `Z`) as a Unix time; fails on any other form."""
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", text), text
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Attempt:
    """What `checkout_attempts` must hold for one checkout request we sent."""

    sale_id: str | None
    user_id: str | None
    item_id: str | None
    outcome: str
    code: str | None
    created_ms: int


def stored(pairs: Pairs, name: str) -> str | None:
    """How a raw parameter is recorded: NULL when missing, repeated values joined."""
    values = parse_qs(urlencode(pairs), keep_blank_values=True).get(name)
    if values is None:
        return None
    return domain.printable(values if len(values) > 1 else values[0])


@dataclass
class Api:
    """HTTP calls to one app: each response is checked against the OpenAPI document, and each
    checkout is written down so the test can look for its attempt row later."""

    app: falcon.App
    clock: Clock
    attempts: list[Attempt]
    sale: Sale | None = None  # the sale opened for this app, when there is one

    def __post_init__(self) -> None:
        self.client = falcon.testing.TestClient(self.app)

    def call(
        self, method: str, path: str, pairs: Pairs | None = None, **kwargs: Any
    ) -> falcon.testing.Result:
        result = self.client.simulate_request(
            method, path, query_string=urlencode(pairs or []), **kwargs
        )
        check_response(self.app, method, path, result)
        return result

    def get(self, path: str, pairs: Pairs | None = None, **kwargs: Any) -> falcon.testing.Result:
        return self.call("GET", path, pairs, **kwargs)

    def checkout_raw(self, pairs: Pairs, **kwargs: Any) -> falcon.testing.Result:
        now_ms = int(self.clock() * 1000)
        result = self.call("POST", "/checkout", pairs, **kwargs)
        outcome = "ok" if result.status_code == 200 else result.json["error"]["code"]
        sale_id = None
        if outcome == "ok":
            sale_id = result.json["sale_id"]
        elif self.sale is not None and self.sale.starts_ms <= now_ms < self.sale.ends_ms:
            # Errors of an open sale belong to that sale, also those recorded straight into
            # PostgreSQL while Redis is away.
            sale_id = self.sale.sale_id
        self.attempts.append(
            Attempt(
                sale_id,
                stored(pairs, "user_id"),
                stored(pairs, "id"),
                outcome,
                result.json["code"] if outcome == "ok" else None,
                now_ms,
            )
        )
        return result

    def checkout(self, user: str, item: str | int) -> falcon.testing.Result:
        return self.checkout_raw([("user_id", user), ("id", str(item))])

    def purchase(self, code: str) -> falcon.testing.Result:
        return self.call("POST", "/purchase", [("code", code)])

    def reserve(self, user: str, item: str | int) -> dict[str, str]:
        result = self.checkout(user, item)
        assert result.status_code == 200, result.text
        return result.json

    def buy(self, user: str, item: str | int) -> tuple[str, dict[str, str]]:
        """Checkout then purchase: (the code, the purchase)."""
        code = self.reserve(user, item)["code"]
        result = self.purchase(code)
        assert result.status_code == 200, result.text
        return code, result.json


@dataclass
class Stack:
    """A service, a keeper and the app on one set of settings: a pod and its jobs."""

    settings: Settings
    service: SaleService
    keeper: SaleKeeper
    api: Api

    def open(self) -> Sale:
        sale, _ = self.keeper.open_sale()
        self.api.sale = sale
        return sale


@dataclass
class Harness:
    """Builds apps on the test's servers and fake clock; checks the attempt rows at the end."""

    env: dict[str, str]
    clock: Clock
    attempts: list[Attempt] = field(default_factory=list)
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def stack(
        self, *, clock: Clock | None = None, keeper_clock: Clock | None = None, **env: str
    ) -> Stack:
        """A stack on the harness's environment and `env`. Its service and its app run on
        `clock` (the harness's unless given), its keeper on `keeper_clock` (else the same)."""
        settings = Settings.from_env({**self.env, **env})
        clock = clock or self.clock
        service = SaleService(
            settings, build_inventory(settings), build_database(settings, 4), clock=clock
        )
        keeper = SaleKeeper(
            settings,
            build_inventory(settings),
            build_database(settings, 2),
            clock=keeper_clock or clock,
        )
        self._closers += [service.database.close, keeper.database.close]
        api = Api(create_app(service), clock, self.attempts)
        return Stack(settings, service, keeper, api)

    def rows(self) -> list[tuple]:
        return sql(
            self.env["DATABASE_URL"],
            "SELECT sale_id, user_id, item_id, outcome, code, created_at FROM checkout_attempts",
        )

    def assert_attempts_recorded(self, keeper: SaleKeeper) -> None:
        """Drain, then every checkout sent is one row with its outcome, code and time."""
        keeper.sweep()
        assert keeper.inventory.backlog() == 0
        rows = Counter(
            (s, u, i, o, c, round(t.timestamp() * 1000)) for s, u, i, o, c, t in self.rows()
        )
        expected = Counter(
            (a.sale_id, a.user_id, a.item_id, a.outcome, a.code, a.created_ms)
            for a in self.attempts
        )
        assert rows == expected

    def close(self) -> None:
        for close in self._closers:
            close()


def checkout(client: falcon.testing.TestClient, user: str, item: str) -> falcon.testing.Result:
    """A checkout straight through a test client: no schema check, no record."""
    return client.simulate_post("/checkout", params={"user_id": user, "id": item})


def purchase(client: falcon.testing.TestClient, code: str) -> falcon.testing.Result:
    """A purchase straight through a test client: no schema check."""
    return client.simulate_post("/purchase", params={"code": code})


def error_code(result: falcon.testing.Result) -> str:
    return result.json["error"]["code"]


def assert_error(result: falcon.testing.Result, status: int, code: str) -> None:
    """The contract's one error shape, with the status the error table gives the code."""
    assert result.status_code == status, result.text
    assert domain.ERRORS[code][0] == status
    assert result.headers["content-type"].startswith("application/json")
    body = result.json
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"].strip()


def retry_after(result: falcon.testing.Result) -> int:
    """The Retry-After header, a whole number of seconds, at least 1."""
    value = result.headers.get("retry-after")
    assert value is not None and value.isdigit() and int(value) >= 1, value
    return int(value)
