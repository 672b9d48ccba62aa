"""/openapi.json tells the truth: a valid OpenAPI 3 document whose paths are the app's routes,
which names every error code, and whose schemas every real response matches.

`check_response` (tests/support/openapi.py) is the schema check; the harness of
tests/support/api.py runs it on every response it produces, so the document is held to everything
the in-process tests see. The document of each identity mode is in tests/unit/test_openapi.py.
"""

from __future__ import annotations

import falcon
import falcon.testing
import pytest
from openapi_spec_validator import validate as validate_openapi

from flashsale.domain import ERRORS
from flashsale.web.openapi import document
from tests.support.openapi import ERROR_SCHEMA, HTTP_METHODS, app_routes, check_response

# --- the document itself ---------------------------------------------------------------------


def test_openapi_json_is_a_valid_openapi_3_document(client: falcon.testing.TestClient) -> None:
    result = client.simulate_get("/openapi.json")
    assert result.status_code == 200
    assert result.headers["content-type"].startswith("application/json")
    served = result.json
    assert served["openapi"].startswith("3.")
    validate_openapi(served)  # raises on any violation of the OpenAPI 3 schema
    assert served == document()


def test_paths_are_exactly_the_routes_of_the_app(client: falcon.testing.TestClient) -> None:
    served = client.simulate_get("/openapi.json").json
    routes = app_routes(client.app)
    documented = {
        path: {m for m in item if m in HTTP_METHODS} for path, item in served["paths"].items()
    }
    assert set(documented) == set(routes)
    assert documented == routes  # the same methods on each path too
    # And the contract's endpoints are all among them.
    for path in (
        "/checkout",
        "/purchase",
        "/sale/status",
        "/sale/items",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ):
        assert path in routes


def test_every_error_code_appears(client: falcon.testing.TestClient) -> None:
    served = client.simulate_get("/openapi.json").json
    enum = served["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"][
        "enum"
    ]
    answered: dict[str, set[str]] = {}
    for item in served["paths"].values():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    for code in response["description"].split(" / "):
                        answered.setdefault(code, set()).add(status)
    for code, (status, _) in ERRORS.items():
        assert code in enum
        # Documented under its own status on at least one operation.
        assert str(status) in answered.get(code, set()), code


def test_retry_after_is_documented_where_the_contract_demands_it(
    client: falcon.testing.TestClient,
) -> None:
    paths = client.simulate_get("/openapi.json").json["paths"]
    seen = 0
    for item in paths.values():
        for method, operation in item.items():
            for status in ("429", "503"):
                if method in HTTP_METHODS and status in operation["responses"]:
                    headers = operation["responses"][status].get("headers", {})
                    assert headers.get("Retry-After", {}).get("required") is True
                    seen += 1
    assert seen >= 5  # checkout and purchase (429, 503), the reads (503)


def test_parameters_of_the_contract_are_documented(client: falcon.testing.TestClient) -> None:
    paths = client.simulate_get("/openapi.json").json["paths"]

    def params(path: str, method: str) -> dict[str, bool]:
        return {
            p["name"]: p.get("required", False)
            for p in paths[path][method]["parameters"]
            if p["in"] == "query"
        }

    assert params("/checkout", "post") == {"user_id": True, "id": True}
    assert params("/purchase", "post") == {"code": True}
    assert params("/sale/items", "get") == {"limit": False, "cursor": False}
    assert params("/sale/stock", "get") == {"limit": False, "cursor": False}


def test_the_http_layers_refusals_are_on_every_operation(client: falcon.testing.TestClient) -> None:
    """gunicorn answers an oversized request line 414, oversized headers 431, bytes that are
    not HTTP 400, an Expect it cannot meet 417 and an unknown transfer coding 501, before any
    route is known: every operation can hear them."""
    paths = client.simulate_get("/openapi.json").json["paths"]
    operations = [op for item in paths.values() for m, op in item.items() if m in HTTP_METHODS]
    assert len(operations) >= 16  # every GET has its HEAD
    for operation in operations:
        for status in ("400", "414", "417", "431", "501"):
            response = operation["responses"][status]
            assert "invalid_request" in response["description"].split(" / ")
            if operation["operationId"].endswith("Head"):
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema == ERROR_SCHEMA, operation["operationId"]


def test_check_response_can_fail(client: falcon.testing.TestClient) -> None:
    """The checker is not a rubber stamp: a body missing a field, a code answered under the
    wrong operation, and an undocumented status are all caught."""
    bad_body = falcon.testing.Result(
        [b'{"sale_id": "x"}'], "200 OK", [("content-type", "application/json")]
    )
    with pytest.raises(Exception, match="required"):
        check_response(client.app, "POST", "/checkout", bad_body)
    wrong_code = falcon.testing.Result(
        [b'{"error": {"code": "code_not_found", "message": "m"}}'],
        "404 Not Found",
        [("content-type", "application/json")],
    )
    with pytest.raises(AssertionError, match="code_not_found"):
        check_response(client.app, "POST", "/checkout", wrong_code)
    no_retry_after = falcon.testing.Result(
        [b'{"error": {"code": "rate_limited", "message": "m"}}'],
        "429 Too Many Requests",
        [("content-type", "application/json")],
    )
    with pytest.raises(AssertionError, match="Retry-After"):
        check_response(client.app, "POST", "/checkout", no_retry_after)
    odd_status = falcon.testing.Result(
        [b"{}"], "418 I'm a teapot", [("content-type", "application/json")]
    )
    with pytest.raises(AssertionError, match="418"):
        check_response(client.app, "GET", "/sale/status", odd_status)


def test_responses_of_every_endpoint_match(client: falcon.testing.TestClient, keeper) -> None:
    """A walk over every endpoint, the successes and the typical errors, against the schemas."""
    app = client.app

    def call(method: str, path: str, query: str = "") -> falcon.testing.Result:
        result = client.simulate_request(method, path, query_string=query)
        check_response(app, method, path, result)
        return result

    assert call("GET", "/sale/status").status_code == 503  # nothing open yet
    keeper.open_sale()
    reservation = call("POST", "/checkout", "user_id=u1&id=1").json
    call("POST", "/checkout", "user_id=u1&id=nope")
    call("POST", "/checkout", "user_id=u1")
    call("POST", "/purchase", f"code={reservation['code']}")
    call("POST", "/purchase", f"code={reservation['code']}")
    call("POST", "/purchase", "code=unknown")
    call("POST", "/purchase", "")
    call("GET", "/sale/status")
    page = call("GET", "/sale/items", "limit=2").json
    call("GET", "/sale/items", f"limit=2&cursor={page['next_cursor']}")
    call("GET", "/sale/items", "limit=0")
    image = page["items"][0]["image_url"].split("falconframework.org", 1)[1]
    assert call("GET", image).status_code == 200
    call("GET", f"/images/{page['sale_id']}/999999.svg")
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/nowhere"):
        call("GET", path)
        call("HEAD", path)
    call("HEAD", "/sale/items", "limit=0")
    call("HEAD", image)
    call("DELETE", "/checkout")
