"""The schema check every in-process response goes through: the response matches what
/openapi.json says for its path, method and status. The app's routes, read from its router."""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any

import falcon
import falcon.testing
import pytest
from jsonschema import Draft202012Validator, FormatChecker

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
