"""Fixtures of the fault tests: the service's environment with short store timeouts, so a
store that goes away turns into quick 503s and the tests stay short."""

from __future__ import annotations

import pytest

from tests.support.crowd import ITEMS, USER_LIMIT


@pytest.fixture
def fault_env(service_env: dict[str, str]) -> dict[str, str]:
    """The session servers, a small sale and timeouts of about a second; tests that break a
    store point REDIS_URL / DATABASE_URL at servers of their own."""
    return {
        **service_env,
        "FLASHSALE_ITEMS": str(ITEMS),
        "FLASHSALE_USER_LIMIT": str(USER_LIMIT),
        "FLASHSALE_CHECKOUT_TTL": "2",
        "FLASHSALE_SWEEP_INTERVAL": "0.2",
        "FLASHSALE_REDIS_TIMEOUT": "0.5",
        "FLASHSALE_PG_CONNECT_TIMEOUT": "1",
        "FLASHSALE_PG_STATEMENT_TIMEOUT_MS": "2000",
        "FLASHSALE_PG_POOL_SIZE": "8",
        "FLASHSALE_PENDING_GRACE": "3",
        "WEB_CONCURRENCY": "2",
    }
