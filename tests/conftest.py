"""Shared fixtures, and the `system` mark. The tests talk to real Redis and PostgreSQL servers:
the ones named by REDIS_URL / DATABASE_URL when set, else servers started for the session by
`flashsale.dev.servers` (system binaries, or the `embedded` extra). A test that stops or restarts a
server starts its own with `start_redis(tmp_path)` / `start_postgres(tmp_path)`; the session
servers stay up for everyone else. Redis Sentinel and Cluster setups are in
tests/support/servers.py, and everything else the tests share is in tests/support/.

The tiers, by directory: unit/ needs no server and no process; app/ runs the app, the service
or the keeper in this process on the session's servers; system/, faults/ and chart/ run real
processes (`flashsale serve`, the CLI, browsers, helm, servers of their own) and are marked
`system`, so `pytest -m "not system"` is the quick loop."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest
import redis

from flashsale.config import Settings
from flashsale.dev.servers import (
    PostgresServer,
    RedisServer,
    create_database,
    drop_database,
    start_postgres,
    start_redis,
    unique_database_name,
)
from flashsale.sale.keeper import SaleKeeper
from flashsale.sale.service import SaleService
from flashsale.stores.migrate import migrate
from flashsale.web.app import create_app
from flashsale.wiring import build_database, build_inventory
from tests.support.servers import ExternalServer, RedisClusterServers, start_redis_cluster
from tests.support.service import LONG_PERIOD, TEST_SALE, Clock, service_environment

# The directories whose tests run real processes: `pytest -m "not system"` leaves them out.
SYSTEM_DIRS = ("system", "faults", "chart")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    system = [Path(__file__).parent / name for name in SYSTEM_DIRS]
    for item in items:
        if any(directory in item.path.parents for directory in system):
            item.add_marker(pytest.mark.system)


# --- servers -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisServer | ExternalServer]:
    if url := os.environ.get("REDIS_URL"):
        yield ExternalServer(url)
        return
    with start_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer | ExternalServer]:
    if url := os.environ.get("DATABASE_URL"):
        yield ExternalServer(url)
        return
    # Not under pytest's temp root: a second pytest run resets that to 0700, which would lock
    # the postgres user out of a server still in use.
    state = Path(tempfile.mkdtemp(prefix="flashsale-test-pg-"))
    try:
        with start_postgres(state) as server:
            yield server
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A Redis Cluster of three primaries, started the first time a test asks for it."""
    with start_redis_cluster(tmp_path_factory.mktemp("cluster")) as servers:
        yield servers


@pytest.fixture
def redis_url(redis_server: RedisServer | ExternalServer) -> str:
    """The session Redis, emptied (FLUSHDB of its db) before the test."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def database_url(postgres_server: PostgresServer | ExternalServer) -> Iterator[str]:
    """A fresh, empty database on the session server, dropped after the test."""
    name = unique_database_name()
    url = create_database(postgres_server.url, name)
    yield url
    drop_database(postgres_server.url, name)


# --- application fixtures ----------------------------------------------------------------------
# Fixtures built on the ones above (settings, a migrated database, the Falcon app, ...) go here.


@pytest.fixture
def migrated_db(database_url: str) -> str:
    migrate(database_url)
    return database_url


@pytest.fixture
def service_env(redis_url: str, migrated_db: str) -> dict[str, str]:
    """Environment for the service, in this process or as the real console script, against the
    test servers: a sale of 50 items, 3 a user, reservations of 60 s."""
    return service_environment(
        redis_url,
        migrated_db,
        **TEST_SALE,
        FLASHSALE_ITEMS="50",
        FLASHSALE_CHECKOUT_TTL="60",
        LOG_LEVEL="WARNING",
    )


@pytest.fixture
def clock() -> Clock:
    """Starts mid-period of the long test period, so a sale is open for the whole test."""
    start = (time.time() // LONG_PERIOD) * LONG_PERIOD + LONG_PERIOD / 2
    return Clock(start)


@pytest.fixture
def settings(service_env: dict[str, str]) -> Settings:
    return Settings.from_env(service_env)


@pytest.fixture
def keeper(settings: Settings, clock: Clock) -> Iterator[SaleKeeper]:
    keeper = SaleKeeper(
        settings, build_inventory(settings), build_database(settings, 2), clock=clock
    )
    yield keeper
    keeper.database.close()


@pytest.fixture
def service(settings: Settings, clock: Clock) -> Iterator[SaleService]:
    service = SaleService(
        settings, build_inventory(settings), build_database(settings), clock=clock
    )
    yield service
    service.database.close()


@pytest.fixture
def client(service: SaleService) -> falcon.testing.TestClient:
    """The real app over WSGI in this process, on the fake clock."""
    return falcon.testing.TestClient(create_app(service))
