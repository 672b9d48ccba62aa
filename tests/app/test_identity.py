"""Identity (FLASHSALE_AUTH=off|header|jwt): who a request acts for, the table's order
(invalid_request, then unauthenticated, then forbidden, before anything a store decides), the
attempt rows of refused checkouts, and purchases only by the code's holder.

In-process apps over the real Redis and PostgreSQL for the rules and the rows. The keys'
checks are in tests/unit/test_identity.py, one real `flashsale serve` per mode in
tests/system/test_identity.py. Keys are made with `cryptography` (tests/support/identity.py).
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from collections import Counter
from typing import Any

import falcon.testing
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.api import Harness, Stack, assert_error
from tests.support.identity import AUDIENCE, SECRET, bearer, jwt_keys, token
from tests.support.service import Clock
from tests.support.stores import redis_client, sql

ISSUER = "https://id.example.com"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], secret: bytes | None, **claims: Any) -> str:
    """A token PyJWT would refuse to make: alg none, or HS256 keyed with a public key's PEM."""
    body = {"sub": "alice", "exp": int(time.time()) + 60, **claims}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(body).encode())}"
    signature = b"" if secret is None else hmac.digest(secret, signing_input.encode(), "sha256")
    return f"{signing_input}.{_b64(signature)}"


def post(stack: Stack, path: str, headers: dict[str, str] | None = None, **params: str):
    return stack.api.call("POST", path, list(params.items()), headers=headers or {})


def attempt_rows(harness: Harness, stack: Stack) -> Counter:
    """(user_id, outcome) of every checkout attempt, once the outbox is drained."""
    stack.keeper.sweep()
    return Counter((u, o) for _, u, _, o, _, _ in harness.rows())


# --- header -------------------------------------------------------------------------------------


def test_header_mode_in_the_tables_order_and_every_attempt_recorded(harness: Harness) -> None:
    stack = harness.stack(FLASHSALE_AUTH="header")
    stack.open()
    alice, bob = {"X-User-Id": "alice"}, {"X-User-Id": "bob"}
    # invalid_request first: a malformed parameter is 400 also without an identity.
    assert_error(post(stack, "/checkout", user_id="a b", id="1"), 400, "invalid_request")
    assert_error(post(stack, "/checkout", alice), 400, "invalid_request")  # no id
    assert_error(post(stack, "/checkout", alice, user_id="", id="1"), 400, "invalid_request")
    # Then unauthenticated: none, or not a valid user_id (a repeated header is joined by ",").
    for headers in ({}, {"X-User-Id": "a b"}, {"X-User-Id": "x" * 65}, {"X-User-Id": "a,b"}):
        result = post(stack, "/checkout", headers, id="1")
        assert_error(result, 401, "unauthenticated")
        assert "www-authenticate" not in result.headers  # the gateway authenticates, not us
    assert_error(post(stack, "/checkout", user_id="bob", id="1"), 401, "unauthenticated")
    # Then forbidden: user_id given, and not the identity's.
    assert_error(post(stack, "/checkout", alice, user_id="bob", id="1"), 403, "forbidden")
    # user_id may be left out; given, it must be the identity.
    held = post(stack, "/checkout", alice, id="1").json
    assert post(stack, "/checkout", alice, user_id="alice", id="1").json == held
    # A store's decision comes after identity: bob hears the item is taken.
    assert_error(post(stack, "/checkout", bob, id="1"), 409, "item_unavailable")
    assert attempt_rows(harness, stack) == Counter(
        {
            ("a b", "invalid_request"): 1,
            (None, "invalid_request"): 1,
            ("", "invalid_request"): 1,
            (None, "unauthenticated"): 4,  # as the request gave it: no user_id
            ("bob", "unauthenticated"): 1,
            ("bob", "forbidden"): 1,
            ("alice", "ok"): 2,  # the identity, also where user_id was left out
            ("bob", "item_unavailable"): 1,
        }
    )


def test_only_the_holder_purchases(harness: Harness, clock: Clock) -> None:
    stack = harness.stack(FLASHSALE_AUTH="header")
    sale = stack.open()
    alice, bob = {"X-User-Id": "alice"}, {"X-User-Id": "bob"}
    code = post(stack, "/checkout", alice, id="1").json["code"]
    assert_error(post(stack, "/purchase", code="bad code"), 400, "invalid_request")
    assert_error(post(stack, "/purchase", code=code), 401, "unauthenticated")
    assert_error(post(stack, "/purchase", bob, code=code), 403, "forbidden")
    # A code nobody holds is unknown, to anyone.
    unknown = f"{sale.sale_id}.{'A' * 22}"
    assert_error(post(stack, "/purchase", bob, code=unknown), 404, "code_not_found")
    assert_error(post(stack, "/purchase", {}, code=unknown), 401, "unauthenticated")
    bought = post(stack, "/purchase", alice, code=code)
    assert bought.status_code == 200 and bought.json["user_id"] == "alice"
    assert_error(post(stack, "/purchase", bob, code=code), 403, "forbidden")  # a retry too
    assert post(stack, "/purchase", alice, code=code).json == bought.json
    # Held by another user: forbidden even once expired (its holder hears code_expired).
    late = post(stack, "/checkout", alice, id="2").json["code"]
    clock.advance(61)
    assert_error(post(stack, "/purchase", bob, code=late), 403, "forbidden")
    assert_error(post(stack, "/purchase", alice, code=late), 410, "code_expired")
    assert sql(harness.env["DATABASE_URL"], "SELECT user_id, item_id FROM purchases") == [
        ("alice", "1")
    ]


def test_forbidden_comes_before_rate_limited(harness: Harness) -> None:
    """Decided in purchase.lua before any bucket is asked; the address's bucket is spent, the
    holder's is not."""
    stack = harness.stack(FLASHSALE_AUTH="header", FLASHSALE_RATE_PER_IP="2")
    stack.open()
    alice, bob = {"X-User-Id": "alice"}, {"X-User-Id": "bob"}
    code = post(stack, "/checkout", alice, id="1").json["code"]  # the address's first token
    assert_error(post(stack, "/purchase", bob, code=code), 403, "forbidden")  # its second
    assert_error(post(stack, "/purchase", bob, code=code), 403, "forbidden")  # none left
    assert_error(post(stack, "/checkout", alice, user_id="bob", id="2"), 403, "forbidden")
    assert_error(post(stack, "/purchase", alice, code=code), 429, "rate_limited")


def test_purchase_answered_from_the_records_checks_the_holder(
    harness: Harness, clock: Clock
) -> None:
    """Redis no longer holds the sale (lost, or gone after it ended): PostgreSQL answers, and
    still only to the holder."""
    stack = harness.stack(FLASHSALE_AUTH="header")
    stack.open()
    alice, bob = {"X-User-Id": "alice"}, {"X-User-Id": "bob"}
    bought = post(stack, "/checkout", alice, id="1").json["code"]
    assert post(stack, "/purchase", alice, code=bought).status_code == 200
    issued = post(stack, "/checkout", alice, id="2").json["code"]
    stack.keeper.sweep()  # the issued code's attempt row is in PostgreSQL
    clock.advance(10_000_000)  # the sale has ended
    redis_client(harness.env["REDIS_URL"]).flushdb()
    assert_error(post(stack, "/purchase", bob, code=bought), 403, "forbidden")
    assert post(stack, "/purchase", alice, code=bought).json["user_id"] == "alice"
    assert_error(post(stack, "/purchase", bob, code=issued), 403, "forbidden")
    assert_error(post(stack, "/purchase", alice, code=issued), 410, "code_expired")


def test_reads_and_probes_need_no_identity(harness: Harness) -> None:
    stack = harness.stack(FLASHSALE_AUTH="jwt", FLASHSALE_JWT_KEY=SECRET)
    stack.open()
    junk = {"Authorization": "Bearer junk"}
    for path in ("/sale/status", "/sale/items", "/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert stack.api.get(path).status_code == 200, path
        assert stack.api.get(path, headers=junk).status_code == 200, path


def test_identity_off_is_the_user_id_as_given(harness: Harness) -> None:
    """Headers that would name a user in another mode change nothing."""
    stack = harness.stack()
    stack.open()
    claims = {"X-User-Id": "bob", "Authorization": f"Bearer {token(SECRET, 'HS256')}"}
    assert_error(post(stack, "/checkout", claims, id="1"), 400, "invalid_request")
    code = post(stack, "/checkout", claims, user_id="carol", id="1").json["code"]
    assert post(stack, "/purchase", {"X-User-Id": "dave"}, code=code).json["user_id"] == "carol"


# --- jwt ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["HS256", "RS256", "ES256"])
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # HS512, made here
def test_jwt_mode_accepts_only_good_tokens(harness: Harness, kind: str) -> None:
    signing_key, configured, algorithm = jwt_keys()[kind]
    stack = harness.stack(
        FLASHSALE_AUTH="jwt",
        FLASHSALE_JWT_KEY=configured,
        FLASHSALE_JWT_AUDIENCE=AUDIENCE,
        FLASHSALE_JWT_ISSUER=ISSUER,
    )
    stack.open()

    def good(**claims: Any) -> str:
        return token(signing_key, algorithm, **{"aud": AUDIENCE, "iss": ISSUER, **claims})

    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_ec = ec.generate_private_key(ec.SECP256R1())
    wrong_key = {"HS256": "another secret of at least 32 bytes!!", "RS256": other_rsa}
    bad = {
        "expired": good(exp=int(time.time()) - 5),
        "without exp": good(exp=None),
        "without sub": good(sub=None),
        "sub not a user_id": good(sub="a b"),
        "sub not text": good(sub=123),
        "not yet valid (nbf)": good(nbf=int(time.time()) + 60),
        "wrong aud": good(aud="someone-else"),
        "without aud": good(aud=None),
        "wrong iss": good(iss="https://evil.example.com"),
        "without iss": good(iss=None),
        "wrong key": token(wrong_key.get(kind, other_ec), algorithm, aud=AUDIENCE, iss=ISSUER),
        "alg none": forged({"alg": "none", "typ": "JWT"}, None, aud=AUDIENCE, iss=ISSUER),
        "HS256 keyed with the configured key": forged(
            {"alg": "HS256", "typ": "JWT"}, configured.encode(), aud=AUDIENCE, iss=ISSUER
        ),
        "not a token": "not.a.token",
        "a signature cut off": good()[:-10],
    }
    if kind == "HS256":  # keyed with the secret itself, but not HS256
        bad["HS512 with the secret"] = token(SECRET, "HS512", aud=AUDIENCE, iss=ISSUER)
        del bad["HS256 keyed with the configured key"]  # that is the good token
    for name, value in bad.items():
        result = post(stack, "/checkout", bearer(value), id="1")
        assert_error(result, 401, "unauthenticated")
        challenge = result.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="flashsale", error="invalid_token"'), name
    for headers in ({}, {"Authorization": f"Basic {good()}"}, {"Authorization": "Bearer "}):
        result = post(stack, "/checkout", headers, id="1")
        assert_error(result, 401, "unauthenticated")
        # RFC 6750 3.1: no error code when the request carries no token at all.
        assert result.headers["www-authenticate"] == 'Bearer realm="flashsale"'
    result = post(stack, "/checkout", {"Authorization": f"bearer {good()}"}, id="1")
    assert result.status_code == 200  # the scheme is case-insensitive
    code = result.json["code"]
    assert_error(post(stack, "/checkout", bearer(good()), user_id="bob", id="2"), 403, "forbidden")
    assert_error(post(stack, "/purchase", bearer(good(sub="bob")), code=code), 403, "forbidden")
    assert post(stack, "/purchase", bearer(good()), code=code).json["user_id"] == "alice"
    assert attempt_rows(harness, stack) == Counter(
        {(None, "unauthenticated"): len(bad) + 3, ("alice", "ok"): 1, ("bob", "forbidden"): 1}
    )


def test_what_is_not_checked(harness: Harness) -> None:
    """aud and iss unless configured; iat (an issuer's clock a little ahead of ours)."""
    stack = harness.stack(FLASHSALE_AUTH="jwt", FLASHSALE_JWT_KEY=SECRET)
    stack.open()
    for claims in ({}, {"aud": "anyone"}, {"iss": "anyone"}, {"iat": int(time.time()) + 30}):
        result = post(stack, "/checkout", bearer(token(SECRET, "HS256", **claims)), id="1")
        assert result.status_code == 200, (claims, result.text)


def test_any_authorization_header_is_401_at_worst(harness: Harness) -> None:
    """Hypothesis writes the header (any Latin-1 text, as HTTP carries it)."""
    client: falcon.testing.TestClient = harness.stack(
        FLASHSALE_AUTH="jwt", FLASHSALE_JWT_KEY=SECRET
    ).api.client

    @given(value=st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=300))
    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=[*HealthCheck])
    def check(value: str) -> None:
        for headers in ({"Authorization": value}, bearer(value)):
            result = client.simulate_post("/purchase", params={"code": "x.y"}, headers=headers)
            assert_error(result, 401, "unauthenticated")

    check()
