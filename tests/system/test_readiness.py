"""/readyz follows the stores, /healthz follows the process.

A real `flashsale serve` on its own Redis and PostgreSQL (so stopping them disturbs no other test):
/readyz answers 503 `unavailable` naming the store while either one is down and 200 again once it
is back; /healthz answers 200 throughout, and /metrics keeps answering (with flashsale_redis_up 0
while Redis is away) so Prometheus still sees the pod.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from flashsale.dev.servers import (
    PostgresServer,
    RedisServer,
    free_port,
    start_postgres,
    start_redis,
)
from flashsale.stores.migrate import migrate
from tests.support.processes import flashsale, serving
from tests.support.service import service_environment

WAIT = 30  # seconds for the service to notice a store going or coming back


Stores = tuple[RedisServer, PostgresServer]


@pytest.fixture
def own_stores(tmp_path: Path) -> Iterator[Stores]:
    with (
        start_redis(tmp_path / "redis") as redis_server,
        start_postgres(tmp_path / "postgres") as postgres_server,
    ):
        yield redis_server, postgres_server


def readiness(base: str) -> tuple[int, dict]:
    response = requests.get(f"{base}/readyz", timeout=10)
    return response.status_code, response.json()


def wait_for_status(base: str, status: int) -> dict:
    """Poll /readyz until it answers `status` three times in a row; /healthz must stay 200."""
    deadline = time.monotonic() + WAIT
    streak, last = 0, (None, {})
    while time.monotonic() < deadline:
        last = readiness(base)
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
        streak = streak + 1 if last[0] == status else 0
        if streak == 3:
            return last[1]
        time.sleep(0.2)
    raise AssertionError(f"/readyz did not settle on {status} within {WAIT}s; last: {last}")


def redis_up(base: str) -> float:
    for line in requests.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith("flashsale_redis_up "):
            return float(line.split()[1])
    raise AssertionError("flashsale_redis_up is missing from /metrics")


def test_readyz_follows_redis_and_postgres(own_stores: Stores, tmp_path: Path) -> None:
    redis_server, postgres_server = own_stores
    database_url = postgres_server.url
    migrate(database_url)
    env = service_environment(
        redis_server.url,
        database_url,
        FLASHSALE_REDIS_TIMEOUT="0.5",
        FLASHSALE_PG_CONNECT_TIMEOUT="1",
        LOG_LEVEL="WARNING",
    )
    with serving(env, tmp_path, workers=2) as (base, _proc):
        body = wait_for_status(base, 200)
        assert body["checks"] == {"redis": True, "postgres": True}
        assert redis_up(base) == 1

        redis_server.stop()
        body = wait_for_status(base, 503)
        assert body["error"]["code"] == "unavailable"
        assert "redis" in body["error"]["message"] and "postgres" not in body["error"]["message"]
        assert redis_up(base) == 0
        checkout = requests.post(f"{base}/checkout", params={"user_id": "u", "id": "1"}, timeout=10)
        assert checkout.status_code == 503 and checkout.json()["error"]["code"] == "unavailable"
        redis_server.start()
        wait_for_status(base, 200)
        assert redis_up(base) == 1

        postgres_server.stop()
        body = wait_for_status(base, 503)
        assert body["error"]["code"] == "unavailable"
        assert "postgres" in body["error"]["message"] and "redis" not in body["error"]["message"]
        postgres_server.start()
        body = wait_for_status(base, 200)
        assert body["checks"] == {"redis": True, "postgres": True}

    # Expected outages are logged as one JSON line each, without a stack trace.
    lines = [
        json.loads(line)
        for path in tmp_path.glob("serve-*.log")
        for line in path.read_text().splitlines()
        if line.startswith("{")
    ]
    assert any(line["message"].startswith("redis unreachable during checkout") for line in lines)
    traced = [line for line in lines if "exception" in line or "Traceback" in line["message"]]
    assert not traced, traced


def test_jobs_log_one_json_line_per_run(service_env: dict[str, str]) -> None:
    """A job run is one structured log line (stderr) beside its result (stdout); a store that is
    down is an expected failure: one error line, exit status 1, no stack trace."""
    env = {**service_env, "LOG_LEVEL": "INFO"}
    done = flashsale("sweep", env=env)
    (line,) = [json.loads(x) for x in done.stderr.splitlines() if '"flashsale.job"' in x]
    assert line["message"] == "job run" and line["command"] == "sweep"
    assert line["outcome"] == "ok" and line["level"] == "info" and line["duration_ms"] >= 0
    assert json.loads(done.stdout)["command"] == "sweep"

    down = {**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    failed = flashsale("sweep", env=down, check=False)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr, failed.stderr
    (line,) = [json.loads(x) for x in failed.stderr.splitlines() if x.startswith("{")]
    assert (line["level"], line["command"], line["outcome"]) == (
        "error",
        "sweep",
        "store_unavailable",
    )
