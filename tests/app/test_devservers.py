"""The conftest fixtures built on the session's servers: each test gets an empty Redis and a
fresh database of its own, and the database is dropped after it."""

from __future__ import annotations

import pytest

from tests.support.stores import redis_client, sql

_seen: dict[str, str] = {}  # what one fixture user left behind, for the next test to check


def test_redis_url_starts_empty(redis_url: str) -> None:
    client = redis_client(redis_url)
    assert client.dbsize() == 0
    client.set("left-behind", "1")
    client.close()
    _seen["redis"] = redis_url


def test_redis_url_is_flushed_between_tests(redis_url: str) -> None:
    if "redis" not in _seen:
        pytest.skip("runs after test_redis_url_starts_empty")
    assert redis_client(redis_url).get("left-behind") is None


def test_database_url_is_a_fresh_empty_database(database_url: str) -> None:
    [(name,)] = sql(database_url, "SELECT current_database()")
    assert name.startswith("test_")
    tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
    assert sql(database_url, tables) == [(0,)]
    sql(database_url, "CREATE TABLE scratch (x int)")
    _seen["database"] = name


def test_database_url_is_dropped_after_use(postgres_server, database_url: str) -> None:
    if "database" not in _seen:
        pytest.skip("runs after test_database_url_is_a_fresh_empty_database")
    names = {row[0] for row in sql(postgres_server.url, "SELECT datname FROM pg_database")}
    assert database_url.rsplit("/", 1)[1] in names
    assert _seen["database"] not in names
