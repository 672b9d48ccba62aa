"""Identity as `flashsale serve` runs it: one real server per mode (off, header, jwt), and a
key it cannot use stops it before it starts. The rules are in tests/app/test_identity.py."""

from __future__ import annotations

import time
from collections import Counter

import requests

from tests.support.crowd import query, wait_settled
from tests.support.identity import AUDIENCE, bearer, jwt_keys, token
from tests.support.processes import flashsale, served_stack


def test_serve_refuses_an_unusable_key_before_starting(service_env: dict[str, str]) -> None:
    env = {**service_env, "FLASHSALE_AUTH": "jwt", "FLASHSALE_JWT_KEY": "too short"}
    done = flashsale("serve", env=env, check=False, timeout=60)
    assert done.returncode == 2
    assert "FLASHSALE_JWT_KEY" in done.stderr


def _serve(tmp_path_factory, redis_server, postgres_server, **settings: str):
    return served_stack(
        redis_server.url,
        postgres_server.url,
        tmp_path_factory.mktemp("identity"),
        redis_db=12,
        **settings,
    )


def _checkout(base: str, headers: dict[str, str], **params: str) -> requests.Response:
    return requests.post(f"{base}/checkout", params=params, headers=headers, timeout=10)


def _purchase(base: str, headers: dict[str, str], code: str) -> requests.Response:
    return requests.post(f"{base}/purchase", params={"code": code}, headers=headers, timeout=10)


def _outcomes(env: dict[str, str]) -> Counter:
    sale_id = query(env, "SELECT sale_id FROM sales")[0][0]
    wait_settled(env, sale_id)
    return Counter(query(env, "SELECT user_id, outcome FROM checkout_attempts"))


def test_served_with_identity_off(tmp_path_factory, redis_server, postgres_server) -> None:
    with _serve(tmp_path_factory, redis_server, postgres_server) as (base, env, _):
        spoof = {"X-User-Id": "bob"}
        assert _checkout(base, spoof, id="1").status_code == 400
        code = _checkout(base, spoof, user_id="alice", id="1").json()["code"]
        assert _purchase(base, spoof, code).json()["user_id"] == "alice"
        assert _outcomes(env) == Counter({(None, "invalid_request"): 1, ("alice", "ok"): 1})


def test_served_with_header_identity(tmp_path_factory, redis_server, postgres_server) -> None:
    with _serve(tmp_path_factory, redis_server, postgres_server, FLASHSALE_AUTH="header") as (
        base,
        env,
        _,
    ):
        alice, bob = {"X-User-Id": "alice"}, {"X-User-Id": "bob"}
        assert _checkout(base, {}, id="1").status_code == 401
        assert _checkout(base, alice, user_id="bob", id="1").status_code == 403
        code = _checkout(base, alice, id="1").json()["code"]
        assert _purchase(base, bob, code).json()["error"]["code"] == "forbidden"
        assert _purchase(base, alice, code).json()["user_id"] == "alice"
        assert _outcomes(env) == Counter(
            {(None, "unauthenticated"): 1, ("bob", "forbidden"): 1, ("alice", "ok"): 1}
        )


def test_served_with_jwt_identity(tmp_path_factory, redis_server, postgres_server) -> None:
    signing_key, configured, algorithm = jwt_keys()["ES256"]
    with _serve(
        tmp_path_factory,
        redis_server,
        postgres_server,
        FLASHSALE_AUTH="jwt",
        FLASHSALE_JWT_KEY=configured,
        FLASHSALE_JWT_AUDIENCE=AUDIENCE,
    ) as (base, env, _):
        expired = token(signing_key, algorithm, aud=AUDIENCE, exp=int(time.time()) - 1)
        refused = _checkout(base, bearer(expired), id="1")
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == (
            'Bearer realm="flashsale", error="invalid_token", error_description="The token expired"'
        )
        alice = bearer(token(signing_key, algorithm, aud=AUDIENCE))
        code = _checkout(base, alice, id="1").json()["code"]
        bob = bearer(token(signing_key, algorithm, aud=AUDIENCE, sub="bob"))
        assert _purchase(base, bob, code).status_code == 403
        assert _purchase(base, alice, code).json()["user_id"] == "alice"
        document = requests.get(f"{base}/openapi.json", timeout=10).json()
        assert document["paths"]["/checkout"]["post"]["security"] == [{"jwt": []}]
        assert _outcomes(env) == Counter({(None, "unauthenticated"): 1, ("alice", "ok"): 1})
