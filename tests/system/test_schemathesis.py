"""Schemathesis against /openapi.json of a running `flashsale serve`: generated requests, valid
and invalid, never get a 500, and every answer matches the document and the contract's error
shape. Bounded (examples per operation and mode, no deadline) so it stays within a minute.

Schemathesis' own pytest plugin (`from_fixture`) does not work with pytest 9 yet, so the
operations' Hypothesis strategies are driven here with `@given`, which is what it does inside.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support.processes import served_stack

MAX_EXAMPLES = 50

# Schemathesis' default rejections of an invalid request, plus the HTTP layer's: a long invalid
# request can pass gunicorn's limits of the request line (414) or headers (431), and gunicorn
# refuses it before the app runs. The document lists both on every operation.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [
                    *("400", "401", "403", "404", "405", "406", "409", "414", "415", "417"),
                    *("422", "428", "429", "431", "5xx"),
                ]
            }
        }
    }
)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, redis_server: Any, postgres_server: Any
) -> Iterator[str]:
    """One server for the module: Schemathesis sends every request to it."""
    with served_stack(
        redis_server.url, postgres_server.url, tmp_path_factory.mktemp("schemathesis"), redis_db=9
    ) as (base, _, _):
        yield base


@pytest.fixture(scope="module")
def served_room(
    tmp_path_factory: pytest.TempPathFactory, redis_server: Any, postgres_server: Any
) -> Iterator[str]:
    """The same with the waiting room on (its routes, and checkout asking for a pass)."""
    with served_stack(
        redis_server.url,
        postgres_server.url,
        tmp_path_factory.mktemp("schemathesis-room"),
        redis_db=10,
        FLASHSALE_WAITING_ROOM="on",
        FLASHSALE_PASS_KEY="schemathesis-pass-key-0123456789",
    ) as (base, _, _):
        yield base


def error_shape(ctx: object, response: Any, case: object) -> bool | None:
    """Every error answer is {"error": {"code": <str>, "message": <str>}} in JSON; 429 and
    503 carry Retry-After."""
    if response.status_code < 400:
        return None
    if response.request.method == "HEAD":  # the GET's status and headers, no body
        assert not response.content, "HEAD answered a body"
        return None
    content_type = response.headers.get("content-type") or [""]
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type.startswith("application/json"), content_type
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str), body
    assert isinstance(body["error"]["message"], str), body
    if response.status_code in (429, 503):
        assert response.headers.get("retry-after"), "429/503 without Retry-After"
    return None


def _operations(base: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", config=CONFIG)
    return [result.ok() for result in schema.get_all_operations()]


def _conforms(base: str, mode: GenerationMode, labels: set[str]) -> None:
    """Generated requests to the operations named in `labels`: each of them exercised."""
    operations = [op for op in _operations(base) if op.label in labels]
    assert {operation.label for operation in operations} == labels
    exercised = set()
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            # A schema-valid request may still be refused: `cursor` is any string in the
            # document but only a cursor the service issued is accepted (400 otherwise), and
            # a made-up ticket or pass is no ticket (404) or pass (403).
            case.call_and_validate(
                base_url=base,
                additional_checks=[error_shape],
                excluded_checks=[positive_data_acceptance],
                timeout=10,
            )

        try:
            check()
        except Unsatisfiable:
            # No invalid request exists for an operation without parameters, or with only
            # free-form strings (the image path): checked below that the others got some.
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        exercised.add(operation.label)
    with_parameters = {
        "POST /checkout",
        "POST /purchase",
        "GET /sale/items",
        "GET /sale/stock",
        "POST /queue",
    }
    assert with_parameters & labels <= exercised


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_openapi_document(served: str, mode: GenerationMode) -> None:
    labels = {operation.label for operation in _operations(served)}
    assert {"POST /checkout", "POST /purchase", "GET /sale/items", "GET /sale/history"} <= labels
    _conforms(served, mode, labels)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_waiting_room_conforms_to_its_openapi_document(
    served_room: str, mode: GenerationMode
) -> None:
    _conforms(served_room, mode, {"POST /queue", "GET /queue/{ticket}", "POST /checkout"})
