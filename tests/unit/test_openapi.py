"""/openapi.json in each identity mode (FLASHSALE_AUTH=off|header|jwt) is a valid OpenAPI 3
document that says what the mode asks of checkout and purchase, and nothing of the reads."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate as validate_openapi

from flashsale.web.openapi import document


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
