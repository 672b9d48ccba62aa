"""/openapi.json tells the truth: a valid OpenAPI 3 document whose paths are the app's routes,
which names every error code, and whose schemas every real response matches.

`check_response` is the schema check; tests/test_api_contract.py runs it on every response it
produces, so the document is held to everything the contract tests see.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any

import falcon
import falcon.testing
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import validate as validate_openapi

from flashsale.domain import ERRORS
from flashsale.web.openapi import document

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time")
def _is_datetime(value: object) -> bool:
    """jsonschema skips date-time without an optional package: check RFC 3339 ourselves."""
    return not isinstance(value, str) or _RFC3339.fullmatch(value) is not None


def _as_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schemas are JSON Schema but for `nullable`: turn it into a null type."""
    if isinstance(node, list):
        return [_as_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _as_json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@cache
def _document(waiting_room: bool = False) -> dict[str, Any]:
    return copy.deepcopy(document(waiting_room=waiting_room))


@cache
def _components() -> dict[str, Any]:
    # The waiting room's document has every schema of the other and its own.
    return _as_json_schema(_document(waiting_room=True)["components"])


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    # "#/components/..." refs resolve against the root: carry the components along.
    root = {**_as_json_schema(schema), "components": _components()}
    return Draft202012Validator(root, format_checker=_FORMATS)


ERROR_SCHEMA = {"$ref": "#/components/schemas/Error"}

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def app_routes(app: falcon.App) -> dict[str, set[str]]:
    """uri template -> the HTTP methods its resource answers, read from Falcon's router."""
    routes: dict[str, set[str]] = {}

    def walk(nodes: list) -> None:
        for node in nodes:
            if node.resource is not None:
                routes[node.uri_template] = {
                    m for m in HTTP_METHODS if hasattr(node.resource, f"on_{m}")
                }
            walk(node.children)

    walk(app._router._roots)
    return routes


def check_response(app: falcon.App, method: str, path: str, result: falcon.testing.Result) -> None:
    """The response matches what the document says for its path, method and status."""
    found = app._router.find(path)
    operation = None
    if found is not None:
        template = found[3]
        # The app serves the waiting room's routes exactly when it is on.
        waiting_room = app._router.find("/queue") is not None
        item = _document(waiting_room)["paths"].get(template)
        assert item is not None, f"route {template} is not in the document"
        operation = item.get(method.lower())
    media = (result.headers.get("content-type") or "").split(";")[0].strip()
    if operation is None:
        # Unknown route or unsupported method: not an operation, but still the error shape.
        assert result.status_code in (404, 405), (method, path, result.status_code)
        assert media == "application/json"
        if method.upper() != "HEAD":
            _validator(ERROR_SCHEMA).validate(result.json)
        return
    status = str(result.status_code)
    if result.status_code == 500:
        pytest.fail(f"{method} {path} answered 500: {result.text[:300]}")
    response = operation["responses"].get(status)
    assert response is not None, f"{method} {path} answered {status}, not in the document"
    for name, header in response.get("headers", {}).items():
        value = result.headers.get(name)
        if header.get("required"):
            assert value is not None, f"{method} {path} {status}: no {name} header"
        if value is not None and header["schema"].get("type") == "integer":
            assert value.isdigit() and int(value) >= header["schema"].get("minimum", 0), value
    if method.upper() == "HEAD":
        # The GET's status and headers, no body: the document says so by giving no content.
        assert "content" not in response, f"HEAD {path} {status} documents a body"
        assert result.content == b"", f"HEAD {path} answered a body"
        return
    content = response.get("content", {})
    assert media in content, f"{method} {path} {status}: {media} not documented ({list(content)})"
    if media != "application/json":
        return
    schema = content[media]["schema"]
    _validator(schema).validate(result.json)
    if schema == ERROR_SCHEMA:
        # The description lists the error codes this operation answers with this status.
        documented = response["description"].split(" / ")
        code = result.json["error"]["code"]
        assert code in documented, f"{method} {path} {status}: {code} not in {documented}"


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


@pytest.mark.parametrize("auth", ["off", "header", "jwt"])
def test_identity_is_documented_for_each_mode(auth: str) -> None:
    served = document(auth, "X-Gateway-User")
    validate_openapi(served)
    schemes = served["components"]["securitySchemes"]
    assert schemes["jwt"] == {**schemes["jwt"], "type": "http", "scheme": "bearer"}
    assert schemes["header"]["in"] == "header" and schemes["header"]["name"] == "X-Gateway-User"
    checkout = served["paths"]["/checkout"]["post"]
    purchase = served["paths"]["/purchase"]["post"]
    (user_id,) = [p for p in checkout["parameters"] if p["name"] == "user_id"]
    # Optional exactly when identity is on, and the description says what then holds.
    assert user_id["required"] is (auth == "off")
    for operation in (checkout, purchase):
        assert operation.get("security") == (None if auth == "off" else [{auth: []}])
        assert operation["responses"]["401"]["description"] == "unauthenticated"
        assert "forbidden" in operation["responses"]["403"]["description"].split(" / ")
        challenge = operation["responses"]["401"]["headers"]["WWW-Authenticate"]
        assert challenge["required"] is (auth == "jwt")
    if auth != "off":
        assert "must be the identity" in user_id["description"]
    # Reads and probes need no identity.
    for path in ("/sale/status", "/sale/items", "/healthz", "/readyz"):
        assert "security" not in served["paths"][path]["get"]


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
