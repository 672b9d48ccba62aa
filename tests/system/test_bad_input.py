"""Hostile and broken requests against a running `flashsale serve` (gunicorn, gevent workers):
oversized or malformed request lines, invalid UTF-8, repeated parameters, huge or too many
headers. Each gets a 4xx (never a 500, never a hang), the workers survive it, and every
checkout request that reached the application has its attempt row.

Request-line and header limits are gunicorn's (flashsale/server/gunicorn_conf.py): it answers them
itself, before the application runs, in the contract's JSON error shape (gunicorn_conf's
_json_error), as everything past the parser is.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from flashsale.server import gunicorn_conf
from tests.support.crowd import query, wait_settled
from tests.support.processes import gunicorn_children, served_stack

WORKERS: list[int] = []  # the server's workers when the module started


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, redis_server: Any, postgres_server: Any
) -> Iterator[tuple[str, dict[str, str]]]:
    with served_stack(
        redis_server.url,
        postgres_server.url,
        tmp_path_factory.mktemp("bad-input"),
        redis_db=10,
        workers=2,
    ) as (base, env, proc):
        WORKERS[:] = [proc.pid, *gunicorn_children(proc.pid)[0]]
        yield base, env


def raw(base: str, request: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (no client library fixes them up); parse the answer."""
    address = urlsplit(base)
    with socket.create_connection((address.hostname, address.port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    pairs = (line.partition(":") for line in lines[1:])
    headers = {k.strip().lower(): v.strip() for k, _, v in pairs}
    return status, headers, body


def request(target: bytes, *headers: bytes, method: bytes = b"POST") -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: test", b"Connection: close", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def contract_error(headers: dict[str, str], body: bytes, code: str) -> None:
    assert headers.get("content-type", "").startswith("application/json"), headers
    error = json.loads(body)["error"]
    assert error["code"] == code and error["message"], error


def still_healthy(base: str) -> None:
    assert requests.get(f"{base}/healthz", timeout=10).status_code == 200


def documented(base: str, method: str, path: str, status: int, body: bytes) -> None:
    """The answer is one /openapi.json (as the server serves it) gives that operation."""
    paths = requests.get(f"{base}/openapi.json", timeout=10).json()["paths"]
    response = paths[path][method.lower()]["responses"].get(str(status))
    assert response is not None, f"{method} {path}: {status} is not in the document"
    code = json.loads(body)["error"]["code"]
    assert code in response["description"].split(" / "), (method, path, status, code)
    assert response["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }


# --- limits of the HTTP parser (gunicorn) ------------------------------------------------------

# Where the parser's refusals land, by route: any operation can hear them.
PARSER_TARGETS = [
    ("POST", "/checkout", b"/checkout?user_id=u1&id="),
    ("POST", "/purchase", b"/purchase?code="),
    ("GET", "/sale/items", b"/sale/items?cursor="),
    ("GET", "/healthz", b"/healthz?pad="),
]


@pytest.mark.parametrize("method,path,target", PARSER_TARGETS, ids=lambda v: str(v)[:12])
def test_oversized_request_line_is_414_as_documented(server, method, path, target):
    base, _ = server
    target += b"u" * gunicorn_conf.limit_request_line
    status, headers, body = raw(base, request(target, method=method.encode()))
    assert status == 414
    contract_error(headers, body, "invalid_request")
    documented(base, method, path, status, body)
    still_healthy(base)


@pytest.mark.parametrize("method,path,target", PARSER_TARGETS, ids=lambda v: str(v)[:12])
def test_oversized_headers_are_431_as_documented(server, method, path, target):
    base, _ = server
    huge = b"X-Junk: " + b"j" * (gunicorn_conf.limit_request_field_size + 10)
    many = [b"X-H%d: v" % n for n in range(gunicorn_conf.limit_request_fields + 5)]
    for extra in ([huge], many):
        status, headers, body = raw(base, request(target + b"1", *extra, method=method.encode()))
        assert status == 431
        contract_error(headers, body, "invalid_request")
        documented(base, method, path, status, body)
    still_healthy(base)


@pytest.mark.parametrize(
    "sent,status",
    [
        (b"POST /checkout?user_id=u1&id=1 HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (request(b"/checkout?user_id=u1&id=1", b"Expect: 200-ok"), 417),
        (request(b"/checkout?user_id=u1&id=1", b"Transfer-Encoding: br, chunked"), 501),
    ],
    ids=["not http", "expect", "transfer coding"],
)
def test_what_gunicorn_cannot_parse_or_honour_is_refused_as_documented(server, sent, status):
    base, _ = server
    got, headers, body = raw(base, sent)
    assert got == status
    contract_error(headers, body, "invalid_request")
    documented(base, "POST", "/checkout", status, body)


def test_garbage_instead_of_http_is_refused(server):
    base, _ = server
    status, headers, body = raw(
        base, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"
    )
    assert status == 400
    contract_error(headers, body, "invalid_request")
    status, _, _ = raw(base, b"POST /checkout?user_id=u1&id=1 HTTP/9.9\r\n\r\n")
    assert 400 <= status < 500
    # Bytes that are not ASCII in the request line itself (not percent-encoded).
    status, _, _ = raw(base, request(b"/checkout?user_id=u\xff\xfe1&id=1"))
    assert status == 400
    still_healthy(base)


def test_a_client_that_sends_half_a_request_does_not_hold_a_worker(server):
    """Slowloris: connections that never finish their request cost a greenlet each, not a
    worker; the others are served meanwhile."""
    base, _ = server
    address = urlsplit(base)
    stalled = []
    for _ in range(50):
        sock = socket.create_connection((address.hostname, address.port), timeout=10)
        sock.sendall(b"POST /checkout?user_id=slow&id=1 HTTP/1.1\r\nHost: x\r\n")
        stalled.append(sock)
    try:
        for _ in range(5):
            still_healthy(base)
    finally:
        for sock in stalled:
            sock.close()


# --- malformed input that reaches the application ----------------------------------------------

BAD_TARGETS = {
    "invalid utf-8 user_id": b"/checkout?user_id=%FF%FE%FD&id=1",
    "broken percent escape": b"/checkout?user_id=%ZZ%&id=1",
    "lone percent": b"/checkout?user_id=%&id=%",
    "NUL escaped": b"/checkout?user_id=u%001&id=1",
    "repeated user_id": b"/checkout?user_id=a&user_id=b&id=1",
    "repeated id": b"/checkout?user_id=a&id=1&id=2",
    "array syntax": b"/checkout?user_id[]=a&id=1",
    "no values": b"/checkout?user_id&id",
    "only separators": b"/checkout?&&&=&=",
    "long user_id": b"/checkout?user_id=" + b"x" * 3000 + b"&id=1",
    "emoji": b"/checkout?user_id=%F0%9F%98%80&id=1",
    "overlong utf-8 slash": b"/checkout?user_id=%C0%AF&id=1",
    "surrogate": b"/checkout?user_id=%ED%A0%80&id=1",
}


def test_malformed_checkouts_are_400_and_every_one_is_recorded(server):
    base, env = server
    sale_id = query(env, "SELECT sale_id FROM sales")[0][0]
    before = query(env, "SELECT count(*) FROM checkout_attempts WHERE outcome = 'invalid_request'")[
        0
    ][0]
    for name, target in BAD_TARGETS.items():
        status, headers, body = raw(base, request(target))
        assert status == 400, name
        contract_error(headers, body, "invalid_request")
    # Each reached the app, so each is an attempt row (drained within the drain interval).
    wait_settled(env, sale_id)
    after = query(env, "SELECT count(*) FROM checkout_attempts WHERE outcome = 'invalid_request'")
    assert after[0][0] - before == len(BAD_TARGETS)
    # Stored as text PostgreSQL accepts (no NUL, valid UTF-8), bounded in size.
    longest = query(env, "SELECT max(length(user_id)) FROM checkout_attempts")[0][0]
    assert longest <= 256
    still_healthy(base)


@pytest.mark.parametrize(
    "target",
    [
        b"/purchase?code=%FF%FE",
        b"/purchase?code=a.b&code=c.d",
        b"/purchase?code=",
        b"/purchase?code=" + b"c" * 3000,
        b"/purchase?code=%00",
        b"/sale/items?limit=%FF",
        b"/sale/items?limit=1&limit=2",
        b"/sale/items?limit=1e3",
        b"/sale/items?cursor=%FF%FE",
        b"/sale/items?limit=99999999999999999999999",
    ],
    ids=lambda t: t.decode("latin-1")[:40],
)
def test_malformed_purchases_and_pages_are_400(server, target):
    base, _ = server
    method = b"POST" if target.startswith(b"/purchase") else b"GET"
    status, headers, body = raw(base, request(target, method=method))
    assert status == 400, body
    contract_error(headers, body, "invalid_request")


def test_digits_outside_ascii_are_4xx_through_gunicorn(server):
    """Percent-encoded as a client sends them: a superscript two, Arabic-Indic ten."""
    base, env = server
    sale_id = query(env, "SELECT sale_id FROM sales")[0][0].encode()
    for digits in (b"%C2%B2", b"%D9%A1%D9%A0"):
        for target in (
            b"/sale/items?limit=" + digits,
            b"/sale/items?cursor=" + sale_id + b":" + digits,
        ):
            status, headers, body = raw(base, request(target, method=b"GET"))
            assert status == 400, (target, body)
            contract_error(headers, body, "invalid_request")
        status, headers, body = raw(
            base, request(b"/images/" + sale_id + b"/" + digits + b".svg", method=b"GET")
        )
        assert status == 404, body
        contract_error(headers, body, "item_not_found")


def test_head_through_gunicorn_has_the_gets_headers_and_no_body(server):
    base, _ = server
    for path in (b"/sale/status", b"/healthz", b"/openapi.json", b"/"):
        got_status, got_headers, got_body = raw(base, request(path, method=b"GET"))
        status, headers, body = raw(base, request(path, method=b"HEAD"))
        assert (status, body) == (got_status, b""), path
        assert headers["content-length"] == got_headers["content-length"] == str(len(got_body))
        assert headers["content-type"] == got_headers["content-type"]


@pytest.mark.parametrize(
    "method,target,status,code",
    [
        (b"GET", b"/checkout?user_id=u1&id=1", 405, "method_not_allowed"),
        (b"DELETE", b"/purchase?code=x", 405, "method_not_allowed"),
        (b"GET", b"/no/such/route", 404, "not_found"),
        (b"GET", b"/images/%FF/1.svg", 404, "item_not_found"),
        (b"GET", b"/images/../../etc/passwd", 404, "not_found"),
        # Shaped like sale ids, but no date: not a sale, not a 500.
        (b"POST", b"/purchase?code=20261399T000000Z-3600." + b"A" * 22, 404, "code_not_found"),
        (b"GET", b"/images/20261399T000000Z-3600/1.svg", 404, "item_not_found"),
    ],
)
def test_wrong_routes_and_methods_answer_in_the_error_shape(server, method, target, status, code):
    base, _ = server
    got, headers, body = raw(base, request(target, method=method))
    assert got == status, body
    contract_error(headers, body, code)


def test_a_request_body_is_ignored_and_bounded(server):
    """Parameters come from the query string only; a large body changes nothing."""
    base, _ = server
    body = b"user_id=evil&id=1" + b"x" * 100_000
    answer = requests.post(f"{base}/checkout?user_id=body-test&id=2", data=body, timeout=10)
    assert answer.status_code == 200, answer.text


def test_no_worker_died_on_any_of_it(server):
    """Run last in this module: the workers that started are the ones still serving."""
    base, _ = server
    master, *workers = WORKERS
    assert len(workers) == 2
    assert gunicorn_children(master)[0] == workers, "a worker died and was replaced"
    still_healthy(base)
