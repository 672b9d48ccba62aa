"""The waiting room (FLASHSALE_WAITING_ROOM=on) over the real app on real Redis and PostgreSQL:
joining and joining again, the random draw of the pre-opening joiners, arrival order after the
opening, admission at exactly FLASHSALE_ADMIT_RATE (on the test's clock; and on Redis's own clock
in real time), several pods sharing one queue, the passes checkout asks for, the metrics and the
OpenAPI document with the room on. Every response is checked against /openapi.json and every
checkout sent is looked for as a row of `checkout_attempts` (the harness of tests/support/api.py).
That the room needs a pass key is in tests/unit/test_waiting_room.py.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import falcon.testing
from openapi_spec_validator import validate as validate_openapi

from flashsale import domain
from flashsale.config import Settings
from flashsale.dev.servers import free_port
from flashsale.metrics import QUEUE_ADMITTED
from flashsale.sale import passes
from flashsale.sale.keeper import SaleKeeper
from flashsale.sale.service import SaleService
from flashsale.web.app import create_app
from flashsale.web.openapi import document
from flashsale.wiring import build_database, build_inventory
from tests.support.api import Api, Harness, Stack, assert_error, retry_after
from tests.support.metrics import metric_samples
from tests.support.openapi import app_routes
from tests.support.service import LONG_PERIOD, Clock
from tests.support.stores import sql

KEY = "a-test-pass-key-0123456789abcdef"
RATE = 10  # admissions per second in these tests
ROOM = {
    "FLASHSALE_WAITING_ROOM": "on",
    "FLASHSALE_PASS_KEY": KEY,
    "FLASHSALE_ADMIT_RATE": str(RATE),
    "FLASHSALE_QUEUE_OPENS_BEFORE": "300",
}


def room(harness: Harness, **env: str) -> Stack:
    return harness.stack(**{**ROOM, **env})


def join(api: Api, user: str) -> dict[str, Any]:
    result = api.call("POST", "/queue", [("user_id", user)])
    assert result.status_code == 200, result.text
    return result.json


def look(api: Api, ticket: str) -> dict[str, Any]:
    result = api.get(f"/queue/{ticket}")
    assert result.status_code == 200, result.text
    return result.json


def next_opening(clock: Clock) -> float:
    """The start of the next period of the tests' long period."""
    return (clock.now // LONG_PERIOD + 1) * LONG_PERIOD


def waiting(api: Api) -> float:
    """flashsale_queue_length as /metrics reports it."""
    _, samples = metric_samples(api.get("/metrics").text)
    (value,) = [v for n, _, v in samples if n == "flashsale_queue_length"]
    return value


def spearman(xs: list[int], ys: list[int]) -> float:
    """Rank correlation of two rankings without ties (1..n each)."""
    n = len(xs)
    d2 = sum((x - y) ** 2 for x, y in zip(xs, ys, strict=True))
    return 1 - 6 * d2 / (n * (n * n - 1))


# --- joining -------------------------------------------------------------------------------------


def test_join_and_join_again_same_ticket(harness: Harness, clock: Clock) -> None:
    stack = room(harness)
    sale = stack.open()
    api = stack.api
    first = join(api, "u1")
    assert first["sale_id"] == sale.sale_id
    assert domain.sale_of_code(first["ticket"]) == sale.sale_id
    # The first into an empty queue of an open sale is due one interval (0.1 s) from now.
    assert (first["position"], first["admitted"], first["retry_after"]) == (1, False, 1)
    assert join(api, "u1") == first
    second = join(api, "u2")
    assert second["ticket"] != first["ticket"] and second["position"] == 2
    assert look(api, first["ticket"]) == first  # no pass before admission
    clock.advance(0.1)
    admitted = look(api, first["ticket"])
    assert admitted["admitted"] is True
    assert (admitted["position"], admitted["retry_after"]) == (0, 0)
    assert passes.admits(KEY.encode(), admitted["pass"], sale.sale_id, "u1", stack.service.now_ms())
    # The pass is fixed once issued: the same on every later look, and on joining again.
    clock.advance(5)
    assert look(api, first["ticket"]) == admitted
    assert join(api, "u1")["ticket"] == first["ticket"]
    assert look(api, second["ticket"])["position"] == 0


def test_join_refusals(harness: Harness, clock: Clock) -> None:
    stack = room(harness, FLASHSALE_RATE_PER_USER="1", FLASHSALE_QUEUE_OPENS_BEFORE="0")
    api = stack.api
    for pairs in ([], [("user_id", "")], [("user_id", "u 1")], [("user_id", "u" * 65)]):
        assert_error(api.call("POST", "/queue", pairs), 400, "invalid_request")
    # No sale open, none upcoming within FLASHSALE_QUEUE_OPENS_BEFORE (0 here).
    closed = api.call("POST", "/queue", [("user_id", "u1")])
    assert_error(closed, 503, "no_active_sale")
    assert retry_after(closed) >= 1
    stack.open()
    clock.advance(1)
    assert join(api, "u1")["position"] == 1
    limited = api.call("POST", "/queue", [("user_id", "u1")])  # the user's bucket: 1 a second
    assert_error(limited, 429, "rate_limited")
    assert retry_after(limited) == 1
    assert join(api, "u2")["position"] == 2  # someone else is not slowed down


def test_unknown_tickets_are_404(harness: Harness, clock: Clock) -> None:
    stack = room(harness)
    sale = stack.open()
    api = stack.api
    real = join(api, "u1")["ticket"]
    forged = real[:-1] + ("A" if real[-1] != "A" else "B")
    for ticket in (forged, f"{sale.sale_id}.{'x' * 22}", "nothing", "a%20b", "x" * 300):
        result = api.get(f"/queue/{ticket}")
        assert result.status_code == 404, (ticket, result.text)
        assert result.json["error"]["code"] == "not_found"
    assert look(api, real)["ticket"] == real


def test_the_address_limit_counts_joins_and_looks(harness: Harness, clock: Clock) -> None:
    """FLASHSALE_RATE_PER_IP: a join, a look, and a look at a ticket that does not exist each
    spend the address's bucket (one token a second here)."""
    stack = room(harness, FLASHSALE_RATE_PER_IP="1")
    stack.open()
    api = stack.api
    ticket = join(api, "u1")["ticket"]
    assert_error(api.call("POST", "/queue", [("user_id", "u2")]), 429, "rate_limited")
    forged = ticket[:-1] + ("A" if ticket[-1] != "A" else "B")
    for spent, status in ((forged, 404), ("nothing", 404), (ticket, 200)):
        clock.advance(1)
        assert api.get(f"/queue/{spent}").status_code == status
        assert_error(api.get(f"/queue/{ticket}"), 429, "rate_limited")


def test_redis_unreachable(harness: Harness) -> None:
    stack = room(
        harness, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", FLASHSALE_REDIS_TIMEOUT="0.5"
    )
    assert_error(stack.api.call("POST", "/queue", [("user_id", "u1")]), 503, "unavailable")
    ticket = f"{domain.sale_id_at(0, LONG_PERIOD)}.{'x' * 22}"
    assert_error(stack.api.get(f"/queue/{ticket}"), 503, "unavailable")


# --- the order -----------------------------------------------------------------------------------


def test_pre_opening_joiners_are_drawn_in_a_random_order(harness: Harness, clock: Clock) -> None:
    """400 join in order before the opening; at the opening their places are a permutation whose
    rank correlation with the join order is within 0.3 of 0. Under a uniformly random order the
    correlation has mean 0 and standard deviation 1/sqrt(399) = 0.05, so |rho| >= 0.3 is a
    6-sigma event: this test fails by chance with probability about 2e-9. Arrival order would
    give rho = 1. Those who join after the opening queue behind them, in arrival order."""
    early, late = 400, 25
    opening = next_opening(clock)
    clock.now = opening - 200
    stack = room(harness)
    api = stack.api
    tickets = []
    for n in range(early):
        answer = join(api, f"early{n}")
        assert answer["position"] is None and answer["admitted"] is False
        assert answer["sale_id"] == domain.sale_id_at(opening, LONG_PERIOD)
        tickets.append(answer["ticket"])
        clock.advance(0.25)
    assert join(api, "early0")["ticket"] == tickets[0]
    # Before the opening: nobody placed, nobody admitted, told to come back at the opening.
    clock.now = opening - 0.5
    assert look(api, tickets[0]) == join(api, "early0")
    assert look(api, tickets[0])["retry_after"] == 1
    assert waiting(api) == early
    clock.now = opening
    stack.open()
    places = [look(api, ticket)["position"] for ticket in tickets]
    assert sorted(places) == list(range(1, early + 1))
    rho = spearman(list(range(1, early + 1)), places)
    assert abs(rho) < 0.3, rho
    for n in range(late):
        assert join(api, f"late{n}")["position"] == early + n + 1
    assert waiting(api) == early + late


# --- the rate ------------------------------------------------------------------------------------


def test_admission_at_the_exact_rate_never_before_opening(harness: Harness, clock: Clock) -> None:
    opening = next_opening(clock)
    clock.now = opening - 30
    stack = room(harness)
    api = stack.api
    tickets = [join(api, f"u{n}")["ticket"] for n in range(30)]
    for before in (20, 5, 0.001):
        clock.now = opening - before
        assert not any(look(api, t)["admitted"] for t in tickets)
        assert waiting(api) == 30
    clock.now = opening
    stack.open()
    opening_ms = stack.service.now_ms()
    last: dict[str, int] = {}
    for step in range(0, 36):
        clock.now = opening + step * 0.1 + 0.05 * (step % 2)  # on and between the beats
        now_ms = stack.service.now_ms()
        due = min(30, (now_ms - opening_ms) * RATE // 1000)
        answers = {t: look(api, t) for t in tickets}
        assert sum(a["admitted"] for a in answers.values()) == due, now_ms - opening_ms
        for ticket, answer in answers.items():
            assert answer["position"] <= last.get(ticket, answer["position"])  # only decreases
            last[ticket] = answer["position"]
            if not answer["admitted"]:
                # Told when its turn comes: exact, as nobody can be admitted out of turn.
                turn_ms = opening_ms + (answer["position"] + due) * 1000 // RATE
                assert answer["retry_after"] == max(1, math.ceil((turn_ms - now_ms) / 1000))
        assert waiting(api) == 30 - due
    # Idle for a while: the budget does not pile up. Five join at once and are admitted one
    # interval apart, counted from their joining.
    clock.now = opening + 60
    joined_ms = stack.service.now_ms()
    late = [join(api, f"late{n}")["ticket"] for n in range(5)]
    for offset in (0.05, 0.1, 0.25, 0.35, 0.5, 0.75):
        clock.now = opening + 60 + offset
        due = min(5, (stack.service.now_ms() - joined_ms) * RATE // 1000)
        assert sum(look(api, t)["admitted"] for t in late) == due, offset


def test_several_pods_admit_at_the_combined_exact_rate(harness: Harness, clock: Clock) -> None:
    """Three services (pods) on one Redis and one clock: joins and looks spread over them; the
    admissions are those of one queue at RATE, and each is counted once."""
    opening = next_opening(clock)
    clock.now = opening - 60
    pods = [room(harness) for _ in range(3)]
    tickets = [join(pods[n % 3].api, f"u{n}")["ticket"] for n in range(60)]
    clock.now = opening
    pods[0].open()
    counted_before = QUEUE_ADMITTED._value.get()
    for step in range(1, 41):
        clock.now = opening + step * 0.125  # exact in binary: no rounding of the ms
        admitted = sum(look(pods[(n + step) % 3].api, t)["admitted"] for n, t in enumerate(tickets))
        assert admitted == min(60, step * 125 * RATE // 1000), step
    assert QUEUE_ADMITTED._value.get() - counted_before == 50


def test_admission_by_redis_clock_in_real_time(harness: Harness) -> None:
    """Two pods on Redis's own clock (TIME), not the test's: they admit at RATE together. Real
    time, so the bounds are generous: at most one more than the rate allows since the first
    join, at least what it allows from the last join to the last look, less two."""
    settings = Settings.from_env({**harness.env, **ROOM})
    keeper = SaleKeeper(settings, build_inventory(settings), build_database(settings, 2))
    pods = [
        SaleService(settings, build_inventory(settings), build_database(settings, 2))
        for _ in range(2)
    ]
    try:
        keeper.open_sale(time.time())
        apps = [falcon.testing.TestClient(create_app(pod)) for pod in pods]
        started = time.time()
        tickets = []
        for n in range(60):
            result = apps[n % 2].simulate_post("/queue", params={"user_id": f"u{n}"})
            tickets.append(result.json["ticket"])
        joined = time.time()
        stop = time.monotonic() + 2.5

        def poll(app: falcon.testing.TestClient) -> None:
            while time.monotonic() < stop:
                app.simulate_get(f"/queue/{tickets[-1]}")

        threads = [threading.Thread(target=poll, args=(app,)) for app in apps]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        looked = time.time()
        admitted = sum(apps[0].simulate_get(f"/queue/{t}").json["admitted"] for t in tickets)
        ended = time.time()
        assert admitted <= math.floor((ended - started) * RATE) + 1
        assert admitted >= math.floor((looked - joined) * RATE) - 2
        assert 20 <= admitted < 60
    finally:
        keeper.database.close()
        for pod in pods:
            pod.database.close()


# --- passes --------------------------------------------------------------------------------------


def admitted_pass(api: Api, clock: Clock, user: str) -> dict[str, Any]:
    ticket = join(api, user)["ticket"]
    clock.advance(1)
    answer = look(api, ticket)
    assert answer["admitted"], answer
    return answer


def test_checkout_needs_a_valid_pass(harness: Harness, clock: Clock) -> None:
    stack = room(harness)
    sale = stack.open()
    api = stack.api
    answer = admitted_pass(api, clock, "u1")
    issued_ms = stack.service.now_ms()
    good = answer["pass"]
    expires = domain.parse_rfc3339(answer["pass_expires_at"]) * 1000
    # FLASHSALE_PASS_TTL (600 s) from its issue, at least a checkout's TTL, never past the end.
    assert expires == issued_ms + 600_000 <= sale.ends_ms
    expiry, mac = good.split(".")
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    other_key = passes.issue(b"another-key-0123456789", sale.sale_id, "u1", int(expiry))
    other_sale = domain.sale_id_at(sale.ends_at, LONG_PERIOD)
    refused = {
        "none": None,
        "empty": "",
        "garbage": "not-a-pass",
        "tampered mac": f"{expiry}.{flipped}",
        "longer expiry": f"{int(expiry) + 1}.{mac}",
        "another key": other_key,
        "another sale": passes.issue(KEY.encode(), other_sale, "u1", int(expiry)),
    }
    for name, value in refused.items():
        headers = {} if value is None else {"X-Flashsale-Pass": value}
        result = api.checkout_raw([("user_id", "u1"), ("id", "1")], headers=headers)
        assert_error(result, 403, "not_admitted")
        assert "retry-after" not in result.headers, name
    # Another user's pass.
    other = api.checkout_raw([("user_id", "u2"), ("id", "1")], headers={"X-Flashsale-Pass": good})
    assert_error(other, 403, "not_admitted")
    # A malformed request is still 400 first.
    bad = api.checkout_raw([("user_id", "u1")], headers={"X-Flashsale-Pass": good})
    assert_error(bad, 400, "invalid_request")
    ok = api.checkout_raw([("user_id", "u1"), ("id", "1")], headers={"X-Flashsale-Pass": good})
    assert ok.status_code == 200, ok.text
    # A purchase needs no pass.
    assert api.purchase(ok.json["code"]).status_code == 200
    clock.now = expires / 1000 - 0.001
    still = api.checkout_raw([("user_id", "u1"), ("id", "2")], headers={"X-Flashsale-Pass": good})
    assert still.status_code == 200, still.text
    clock.now = expires / 1000 + 0.001
    late = api.checkout_raw([("user_id", "u1"), ("id", "3")], headers={"X-Flashsale-Pass": good})
    assert_error(late, 403, "not_admitted")
    harness.assert_attempts_recorded(stack.keeper)
    rows = sql(
        harness.env["DATABASE_URL"],
        "SELECT sale_id, count(*) FROM checkout_attempts WHERE outcome = 'not_admitted' GROUP BY 1",
    )
    assert rows == [(sale.sale_id, len(refused) + 2)]


def test_a_pass_ends_with_its_sale(harness: Harness, clock: Clock) -> None:
    stack = room(harness, FLASHSALE_QUEUE_OPENS_BEFORE="0")
    sale = stack.open()
    clock.now = sale.ends_at - 30
    answer = admitted_pass(stack.api, clock, "u1")
    assert domain.parse_rfc3339(answer["pass_expires_at"]) == sale.ends_at


def test_with_the_room_off_nothing_changes(harness: Harness, clock: Clock) -> None:
    stack = harness.stack()
    stack.open()
    api = stack.api
    assert api.checkout("u1", 1).status_code == 200
    ignored = api.checkout_raw([("user_id", "u1"), ("id", "2")], headers={"X-Flashsale-Pass": "x"})
    assert ignored.status_code == 200
    assert api.call("POST", "/queue", [("user_id", "u1")]).status_code == 404
    assert api.get("/queue/whatever").status_code == 404
    served = api.get("/openapi.json").json
    assert not any(path.startswith("/queue") for path in served["paths"])
    names = {p["name"] for p in served["paths"]["/checkout"]["post"]["parameters"]}
    assert "X-Flashsale-Pass" not in names
    metrics = api.get("/metrics").text
    assert "flashsale_queue_length" not in metrics
    harness.assert_attempts_recorded(stack.keeper)


# --- metrics, document, configuration ---------------------------------------------------------


def test_metrics_of_the_queue(harness: Harness, clock: Clock) -> None:
    stack = room(harness)
    stack.open()
    api = stack.api
    types, _ = metric_samples(api.get("/metrics").text)
    assert types["flashsale_queue_length"] == "gauge"
    assert types["flashsale_queue_admitted"] == "counter"

    def admitted_total() -> float:
        _, samples = metric_samples(api.get("/metrics").text)
        return sum(v for n, _, v in samples if n == "flashsale_queue_admitted_total")

    before = admitted_total()
    for n in range(12):
        join(api, f"u{n}")
    assert waiting(api) == 12
    clock.advance(0.75)  # 7 due; the scrape itself records them, and counts them
    assert admitted_total() - before == 7
    assert waiting(api) == 5


def test_openapi_document_with_the_room_on(harness: Harness) -> None:
    api = room(harness).api
    served = api.get("/openapi.json").json
    validate_openapi(served)
    assert served == document(waiting_room=True)
    documented = {
        path: {m for m in item if m in ("get", "head", "post")}
        for path, item in served["paths"].items()
    }
    assert documented == app_routes(api.app)
    assert {"/queue", "/queue/{ticket}"} <= set(documented)
    header = [p for p in served["paths"]["/checkout"]["post"]["parameters"] if p["in"] == "header"]
    assert [p["name"] for p in header] == ["X-Flashsale-Pass"]
    assert "not_admitted" in served["paths"]["/checkout"]["post"]["responses"]["403"]["description"]
