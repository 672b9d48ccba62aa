"""A purchase whose COMMIT reached PostgreSQL but whose answer never came back: the service
must not undo in Redis a sale that PostgreSQL may hold."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import requests

from tests.faults.conftest import USER_LIMIT
from tests.faults.harness import Tally, check_sale, query, sale_id_of, wait_settled
from tests.support import serving


class CommitTrap:
    """A TCP proxy in front of PostgreSQL. Once armed, the first connection that sends an
    INSERT INTO purchases and then COMMIT gets its COMMIT delivered, and then loses the
    connection before the answer comes back: the client cannot know whether it committed."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.armed = threading.Event()
        self.fired = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            state = {"insert": False, "swallow": False}
            threading.Thread(target=self._up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, state), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if b"INSERT INTO purchases" in data:
                    state["insert"] = True
                trap = (
                    self.armed.is_set()
                    and not self.fired.is_set()
                    and state["insert"]
                    and b"COMMIT" in data
                )
                if trap:
                    state["swallow"] = True
                    self.fired.set()
                server.sendall(data)
                if trap:
                    time.sleep(0.5)  # PostgreSQL commits; its answer is thrown away
                    break
                if b"COMMIT" in data or b"ROLLBACK" in data:
                    state["insert"] = False
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _down(self, server: socket.socket, client: socket.socket, state: dict) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if state["swallow"]:
                    continue
                client.sendall(data)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closing = True
        self._listener.close()


@contextlib.contextmanager
def trapped(database_url: str) -> Iterator[tuple[CommitTrap, str]]:
    url = urlsplit(database_url)
    trap = CommitTrap((url.hostname, url.port))
    try:
        yield trap, url._replace(netloc=f"{url.username}@127.0.0.1:{trap.port}").geturl()
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
