"""SIGTERM of `flashsale serve` under load: a graceful stop, as Kubernetes does it."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import psycopg2
import requests

from flashsale.server import gunicorn_conf
from tests.support.crowd import USER_LIMIT, Tally, check_sale, query, sale_id_of
from tests.support.processes import flashsale, serving

IN_FLIGHT = 6


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def test_sigterm_finishes_in_flight_requests_and_refuses_new_ones(
    fault_env: dict[str, str], tmp_path: Path
):
    """Purchases held up in PostgreSQL (the test locks the purchases table) are in flight when
    the server gets SIGTERM: new connections are refused at once, the held purchases still get
    their 200 once the lock goes, and the server exits within gunicorn's graceful timeout."""
    env = {**fault_env, "FLASHSALE_PG_STATEMENT_TIMEOUT_MS": "20000"}
    sale_id = sale_id_of(env)
    tally = Tally()
    with serving(env, tmp_path, workers=2) as (base, proc):
        port = int(base.rsplit(":", 1)[1])
        codes = []
        for n in range(IN_FLIGHT):
            user, item = f"user-{n}", str(n + 1)
            answer = requests.post(
                f"{base}/checkout", params={"user_id": user, "id": item}, timeout=10
            )
            assert answer.status_code == 200, answer.text
            codes.append(answer.json()["code"])
            tally.checkouts.append((user, item, 200, "ok", codes[-1]))

        # Hold every INSERT INTO purchases until we let go.
        locker = psycopg2.connect(env["DATABASE_URL"])
        locker.cursor().execute("LOCK TABLE purchases IN ACCESS EXCLUSIVE MODE")
        answers: dict[str, requests.Response | Exception] = {}

        def buy(code: str) -> None:
            try:
                answers[code] = requests.post(f"{base}/purchase", params={"code": code}, timeout=60)
            except requests.RequestException as error:
                answers[code] = error

        buyers = [threading.Thread(target=buy, args=(code,)) for code in codes]
        for thread in buyers:
            thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            waiting = query(
                env,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type"
                " = 'Lock' AND query LIKE 'INSERT INTO purchases%%'",
            )[0][0]
            if waiting == IN_FLIGHT:
                break
            time.sleep(0.05)
        assert waiting == IN_FLIGHT, "the purchases never reached PostgreSQL"

        # A client that keeps an idle keep-alive connection, as load balancers do.
        idle = requests.Session()
        assert idle.get(f"{base}/healthz", timeout=10).status_code == 200

        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not _refused(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _refused(port), "still accepting connections after SIGTERM"
        assert proc.poll() is None, "exited with requests still in flight"

        locker.rollback()  # the held purchases go through now
        locker.close()
        for thread in buyers:
            thread.join(30)
        proc.wait(gunicorn_conf.graceful_timeout + 10)
        # Within the grace period: idle keep-alive connections do not hold the stop up.
        assert time.monotonic() - stopped_at < gunicorn_conf.graceful_timeout
        idle.close()
        assert proc.returncode == 0, proc.returncode

    for code in codes:
        answer = answers[code]
        assert isinstance(answer, requests.Response), f"in-flight purchase lost: {answer}"
        assert answer.status_code == 200, answer.text
        tally.purchases.append((code, 200, answer.json()))
    flashsale("sweep", env=env)  # the pod's sweeper is gone with it: drain what it left
    check_sale(env, sale_id, tally, sold=IN_FLIGHT, limit=USER_LIMIT)
