"""Load shedding in this process (docs/admission.md): the real app on the fake clock, the bound
set to 0 so that every counted request is past it. Where `overloaded` comes among the refusals,
what is and is not shed, and that a shed checkout is a row. Shedding under real concurrency and
the connection rules of `flashsale serve` are in tests/system/test_admission.py.
"""

from __future__ import annotations

import falcon.testing
import pytest

from flashsale.sale.keeper import SaleKeeper
from flashsale.sale.service import SaleService
from tests.support.metrics import counted
from tests.support.openapi import check_response
from tests.support.stores import attempt_outcomes


@pytest.fixture
def shedding(
    service: SaleService, keeper: SaleKeeper, client: falcon.testing.TestClient
) -> falcon.testing.TestClient:
    """The app with its sale open and a bound of 0: every counted request is past it."""
    sale, _ = keeper.open_sale()
    service.load.limit = 0
    client.sale_id = sale.sale_id
    return client


def test_past_the_bound_a_request_is_answered_overloaded_with_retry_after(
    shedding: falcon.testing.TestClient, service: SaleService, keeper: SaleKeeper
) -> None:
    image = f"/images/{shedding.sale_id}/1.svg"
    shed = [
        ("POST", "/checkout", {"user_id": "u1", "id": "1"}),
        ("POST", "/purchase", {"code": "no-such-code"}),
        ("GET", "/sale/status", None),
        ("GET", "/sale/items", None),
        ("GET", "/sale/items", {"cursor": f"{shedding.sale_id}:5"}),
        ("GET", image, None),
    ]
    for method, path, params in shed:
        result = shedding.simulate_request(method, path, params=params)
        assert result.status_code == 503, result.text
        assert result.json["error"]["code"] == "overloaded"
        assert int(result.headers["retry-after"]) >= 1
        check_response(shedding.app, method, path, result)  # as /openapi.json says
    assert service.load.inflight == 0  # every request left as it came
    metrics = shedding.simulate_get("/metrics").text
    assert counted(metrics, "flashsale_shed_total", route="/checkout") == 1
    assert counted(metrics, "flashsale_shed_total", route="/sale/items") == 2
    # The shed checkout is a row, through the outbox like any refusal without a store.
    keeper.sweep()
    assert attempt_outcomes(service.settings.database_url) == {"overloaded": 1}


def test_a_malformed_request_is_invalid_before_it_is_overloaded(
    shedding: falcon.testing.TestClient, service: SaleService, keeper: SaleKeeper
) -> None:
    assert shedding.simulate_post("/checkout", params={"id": "1"}).status_code == 400
    assert shedding.simulate_post("/purchase", params={"code": "a b"}).status_code == 400
    assert shedding.simulate_get("/sale/items", params={"limit": "0"}).status_code == 400
    assert shedding.simulate_get("/sale/items", params={"cursor": "other:5"}).status_code == 400
    keeper.sweep()
    assert attempt_outcomes(service.settings.database_url) == {"invalid_request": 1}


def test_probes_and_metrics_are_never_shed(shedding: falcon.testing.TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert shedding.simulate_get(path).status_code == 200, path
