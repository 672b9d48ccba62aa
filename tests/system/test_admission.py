"""Load shedding and the connection rules (docs/admission.md) against `flashsale serve`: shedding
under real concurrency (Redis paused holds one checkout in flight), the probe port, the header
deadline, and the cap of connections per client address, which the pod's workers share. Where
`overloaded` comes among the refusals is in tests/app/test_admission.py (the app in this
process), the retry calendar and the address table in tests/unit/test_admission.py.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from flashsale.dev.servers import free_port
from tests.support.metrics import counted
from tests.support.processes import flashsale, gunicorn_children, serving
from tests.support.stores import attempt_outcomes, redis_client


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A connection from `source` (loopback has all of 127.0.0.0/8)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_answer(sock: socket.socket) -> int | None:
    """The status of the next response on `sock`, its body read; None if it closed first."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
    except ConnectionResetError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        (
            int(v)
            for k, _, v in (ln.partition(":") for ln in lines[1:])
            if k.lower() == "content-length"
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        body += chunk
    return int(lines[0].split()[1])


def ask(sock: socket.socket, path: str = "/healthz") -> int | None:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    return read_answer(sock)


def closed_after(sock: socket.socket, limit: float = 30.0) -> float:
    """Seconds until the server closes `sock` (which must get no answer meanwhile)."""
    started = time.monotonic()
    sock.settimeout(limit)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        data = b""
    assert data == b"", f"answered: {data[:80]!r}"
    return time.monotonic() - started


def served_again(port: int, source: str, within: float) -> None:
    """A new connection from `source` is served (again) within `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        with connect(port, source) as sock, contextlib.suppress(OSError):
            if ask(sock) == 200:
                return
        assert time.monotonic() < deadline, f"{source} still refused"
        time.sleep(0.1)


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """A worker frozen (SIGSTOP): its siblings accept every new connection meanwhile."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_shed_under_real_concurrency_and_every_shed_checkout_is_a_row(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    """One worker, a bound of 1: with Redis paused a checkout stays in flight, and whatever
    comes meanwhile is shed (the reads at once, without Redis; the checkouts once their record
    is in the outbox). Probes still answer."""
    env = {**service_env, "FLASHSALE_MAX_INFLIGHT": "1", "FLASHSALE_REDIS_TIMEOUT": "20"}
    flashsale("open-sale", env=env)
    with serving(env, tmp_path, workers=1) as (base, _):
        session = requests.Session()
        assert session.post(f"{base}/checkout?user_id=warm&id=1", timeout=10).status_code == 200
        client = redis_client(env["REDIS_URL"])
        client.execute_command("CLIENT", "PAUSE", "4000", "WRITE")
        with ThreadPoolExecutor(8) as pool:
            held = pool.submit(requests.post, f"{base}/checkout?user_id=a&id=2", timeout=30)
            time.sleep(1.0)  # the checkout waits for Redis, in flight
            shed_checkouts = [
                pool.submit(requests.post, f"{base}/checkout?user_id=b{n}&id=3", timeout=30)
                for n in range(3)
            ]
            status = requests.get(f"{base}/sale/status", timeout=30)
            health = requests.get(f"{base}/healthz", timeout=30)
            ready = requests.get(f"{base}/readyz", timeout=30)
            assert held.result().status_code == 200
            answers = [f.result() for f in shed_checkouts]
        assert status.status_code == 503 and status.json()["error"]["code"] == "overloaded"
        assert int(status.headers["Retry-After"]) >= 1
        assert (health.status_code, ready.status_code) == (200, 200)
        for answer in answers:
            assert answer.status_code == 503 and answer.json()["error"]["code"] == "overloaded"
            assert int(answer.headers["Retry-After"]) >= 1
        metrics = session.get(f"{base}/metrics", timeout=10).text
        assert counted(metrics, "flashsale_shed_total", route="/checkout") == 3
        assert counted(metrics, "flashsale_shed_total", route="/sale/status") == 1
        deadline = time.monotonic() + 20  # the pod's sweeper drains the outbox
        while attempt_outcomes(env["DATABASE_URL"]) != {"ok": 2, "overloaded": 3}:
            assert time.monotonic() < deadline, attempt_outcomes(env["DATABASE_URL"])
            time.sleep(0.2)


def test_the_probe_port_answers_the_probes_only(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    probe_port = free_port()
    env = {**service_env, "FLASHSALE_PROBE_PORT": str(probe_port)}
    with serving(env, tmp_path) as (base, _):
        probes = f"http://127.0.0.1:{probe_port}"
        for path in ("/healthz", "/readyz", "/metrics"):
            assert requests.get(probes + path, timeout=10).status_code == 200, path
        refused = requests.post(f"{probes}/checkout?user_id=u&id=1", timeout=10)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 200


@pytest.fixture
def deadline_server(service_env: dict[str, str], tmp_path: Path) -> Iterator[int]:
    env = {**service_env, "FLASHSALE_HEADER_TIMEOUT": "1"}
    with serving(env, tmp_path) as (base, _):
        yield port_of(base)


def test_half_a_request_line_is_closed_after_the_header_timeout(deadline_server: int) -> None:
    sock = connect(deadline_server)
    sock.sendall(b"POST /chec")
    assert 0.5 < closed_after(sock) < 10  # the timeout is 1 s; keep-alive would be 75


def test_headers_trickling_in_are_closed_after_the_header_timeout(deadline_server: int) -> None:
    sock = connect(deadline_server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\n")
    started = time.monotonic()
    while time.monotonic() - started < 20:
        try:
            sock.sendall(b"X")  # one byte of a header line every 0.2 s
        except (BrokenPipeError, ConnectionResetError):
            break
        if select.select([sock], [], [], 0.2)[0]:
            assert closed_after(sock) < 1
            break
    assert 0.5 < time.monotonic() - started < 10


def test_a_kept_alive_connection_may_idle_then_its_next_headers_have_the_deadline(
    deadline_server: int,
) -> None:
    sock = connect(deadline_server)
    assert ask(sock) == 200
    time.sleep(3)  # three header timeouts without a byte: idle, which keep-alive allows
    assert ask(sock) == 200
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # the next request starts, then stalls
    assert 0.5 < closed_after(sock) < 10


def test_a_new_connection_must_send_its_first_headers_within_the_timeout(
    deadline_server: int,
) -> None:
    sock = connect(deadline_server)
    assert 0.5 < closed_after(sock) < 10  # nothing sent at all


def test_connections_per_address_are_capped_per_pod_across_workers(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    """A cap of 4 with two workers: two connections held by each worker, a fifth from that
    address is closed unanswered by either, while another address is served."""
    env = {**service_env, "FLASHSALE_MAX_CONN_PER_IP": "4"}
    with serving(env, tmp_path, workers=2) as (base, proc):
        port = port_of(base)
        first, second = gunicorn_children(proc.pid)[0]
        held = []
        with stopped(first):
            held += [connect(port, "127.0.0.3") for _ in range(2)]
            assert [ask(s) for s in held] == [200, 200]  # the second worker has them
        with stopped(second):
            held += [connect(port, "127.0.0.3") for _ in range(2)]
            assert [ask(s) for s in held[2:]] == [200, 200]  # the first worker has these
            over = connect(port, "127.0.0.3")
            assert closed_after(over) < 10
            other = connect(port, "127.0.0.4")
            assert ask(other) == 200
        over = connect(port, "127.0.0.3")  # either worker refuses it
        assert closed_after(over) < 10
        assert [ask(s) for s in held] == [200] * 4  # the held ones are served still
        held.pop().close()
        served_again(port, "127.0.0.3", within=10)  # once the pod has seen the close
        for sock in held:
            sock.close()


def test_a_worker_that_dies_leaves_no_count_behind(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**service_env, "FLASHSALE_MAX_CONN_PER_IP": "2"}
    with serving(env, tmp_path, workers=2) as (base, proc):
        port = port_of(base)
        first, second = gunicorn_children(proc.pid)[0]
        with stopped(first):
            held = [connect(port, "127.0.0.5") for _ in range(2)]
            assert [ask(s) for s in held] == [200, 200]
        assert closed_after(connect(port, "127.0.0.5")) < 10
        os.kill(second, signal.SIGKILL)  # it held both: the master frees its row
        served_again(port, "127.0.0.5", within=30)


def test_behind_a_proxy_header_the_peers_are_proxies_and_are_not_capped(
    service_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **service_env,
        "FLASHSALE_MAX_CONN_PER_IP": "1",
        "FLASHSALE_CLIENT_IP_HEADER": "X-Forwarded-For",
    }
    with serving(env, tmp_path) as (base, _):
        port = port_of(base)
        held = [connect(port, "127.0.0.6") for _ in range(3)]
        assert [ask(s) for s in held] == [200, 200, 200]
        for sock in held:
            sock.close()
    assert (
        "FLASHSALE_MAX_CONN_PER_IP is not applied" in (tmp_path / f"serve-{port}.log").read_text()
    )
