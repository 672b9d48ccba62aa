"""`flashsale crowd`, the demo crowd, against a real `flashsale serve`: it buys, never asks for
more than the per-user limit, exits 0 with its summary, goes through the waiting room when it is
on, and refuses a URL that is not HTTP before sending anything."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.processes import flashsale, serving
from tests.support.stores import attempt_outcomes, sql

LIMIT = 2


def crowd(base: str, env: dict[str, str], *args: str):
    return flashsale("crowd", "--url", base, *args, env=env, check=False, timeout=60)


def test_the_crowd_buys_within_the_limit(service_env: dict[str, str], tmp_path: Path) -> None:
    env = {
        **service_env,
        "FLASHSALE_ITEMS": "40",
        "FLASHSALE_USER_LIMIT": str(LIMIT),
        "FLASHSALE_CHECKOUT_TTL": "3",
    }
    flashsale("open-sale", env=env)
    with serving(env, tmp_path, workers=1) as (base, _proc):
        run = crowd(
            base, env, "--users", "30", "--duration", "6", "--limit", str(LIMIT), "--abandon", "0.3"
        )
        assert run.returncode == 0, run.stderr
        flashsale("sweep", env=env)  # every checkout attempt into PostgreSQL
    out = run.stdout
    header = r"^flashsale crowd: 30 users for [\d.]+ s against http://127\.0\.0\.1:\d+ \(stopped: "
    assert re.search(header, out, re.M), out
    # The progress line (every 5 s when stdout is not a terminal) and the summary.
    assert re.search(r"^\[0:00/0:06\] sold \d+/40 {2}reserved \d+ {2}remaining \d+ \|", out, re.M)
    bought = re.search(r"^ {2}sale (\S+): the crowd bought (\d+), abandoned (\d+);", out, re.M)
    assert bought, out
    sale_id, crowd_bought = bought[1], int(bought[2])
    most_held = int(re.search(r"most items one user held at once: (\d+)", out)[1])
    assert 1 <= most_held <= LIMIT

    purchases = sql(
        env["DATABASE_URL"],
        "SELECT user_id, count(*) FROM purchases WHERE sale_id = %s GROUP BY user_id",
        sale_id,
    )
    assert sum(n for _, n in purchases) == crowd_bought >= 1
    assert all(user.startswith("crowd-") and n <= LIMIT for user, n in purchases), purchases
    outcomes = attempt_outcomes(env["DATABASE_URL"])
    # It never asked for more than the limit: the service never had to refuse it.
    assert "user_limit_reached" not in outcomes, outcomes
    assert outcomes["ok"] >= crowd_bought
    checkouts = re.search(r"^ {2}checkouts {2}ok (\d+)", out, re.M)
    assert checkouts and int(checkouts[1]) == outcomes["ok"]


def test_the_crowd_goes_through_the_waiting_room(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **service_env,
        "FLASHSALE_WAITING_ROOM": "on",
        "FLASHSALE_PASS_KEY": "crowd-test-pass-key-0123456789",
        "FLASHSALE_ADMIT_RATE": "20",
    }
    flashsale("open-sale", env=env)
    with serving(env, tmp_path, workers=1) as (base, _proc):
        run = crowd(base, env, "--users", "10", "--duration", "5", "--limit", "3")
    assert run.returncode == 0, run.stderr
    queue = re.search(r"^ {2}queue {6}ok (\d+)", run.stdout, re.M)
    assert queue and int(queue[1]) >= 10, run.stdout  # each joined, then looked for its pass
    purchases = sql(env["DATABASE_URL"], "SELECT count(*) FROM purchases")[0][0]
    assert purchases >= 1, run.stdout
    assert "not_admitted" not in run.stdout


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/", "file:///etc/passwd", "127.0.0.1:8080", "http://user:pw@127.0.0.1/"],
)
def test_the_crowd_refuses_a_url_that_is_not_http(url: str, service_env: dict[str, str]) -> None:
    run = flashsale("crowd", "--url", url, "--duration", "1", env=service_env, check=False)
    assert run.returncode == 2
    assert run.stderr.startswith("flashsale crowd: --url "), run.stderr
    assert repr(url) in run.stderr
    assert run.stdout == ""  # no crowd ran, no summary
