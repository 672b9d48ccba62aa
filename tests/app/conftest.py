"""Fixtures of the in-process tests: a harness that builds apps on the test's servers and fake
clock (tests/support/api.py), on one sale layout unless a module asks for every layout."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.api import Harness, Stack
from tests.support.service import Clock


@pytest.fixture
def layout_env(service_env: dict[str, str]) -> dict[str, str]:
    """The sale under one hash tag of one Redis. A module whose tests must hold on every
    layout overrides this with a fixture parametrized over `tests.support.api.LAYOUTS`."""
    return service_env


@pytest.fixture
def harness(layout_env: dict[str, str], clock: Clock) -> Iterator[Harness]:
    harness = Harness(layout_env, clock)
    yield harness
    harness.close()


@pytest.fixture
def stack(harness: Harness) -> Stack:
    """The default app (50 items, limit 3, TTL 60 s, no rate limit) with its sale open."""
    stack = harness.stack()
    stack.open()
    return stack
