"""The Batcher on a real Redis: many greenlets at once share round-trips, yet each hears only its
own reply or its own error, and a broken connection fails the callers of that round-trip alone."""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import pytest
import redis
from redis.exceptions import ConnectionError, DataError, NoScriptError, ResponseError

from flashsale.dev.servers import free_port
from flashsale.stores.inventory import Inventory, connect
from flashsale.stores.inventory.batching import _IDLE_CHECK_AFTER, Batcher
from flashsale.stores.inventory.keys import OUTBOX_REGISTRY


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def test_concurrent_callers_each_get_their_own_reply(client: redis.Redis) -> None:
    batcher = Batcher(client)
    batcher.execute_command("PING")  # connected
    reads_before = client.info("stats")["total_reads_processed"]
    calls = [gevent.spawn(batcher.execute_command, "ECHO", f"reply-{n}") for n in range(300)]
    gevent.joinall(calls, raise_error=True)
    assert [call.value for call in calls] == [f"reply-{n}" for n in range(300)]
    # They went out together: Redis read far fewer times than there were calls (the two INFO
    # calls count as reads too).
    assert client.info("stats")["total_reads_processed"] - reads_before < 30


def test_an_error_reply_reaches_its_caller_only(client: redis.Redis) -> None:
    batcher = Batcher(client)
    good = [gevent.spawn(batcher.execute_command, "INCR", "batching:n") for _ in range(20)]
    bad = gevent.spawn(batcher.execute_command, "EVALSHA", "0" * 40, 0)
    wrong = gevent.spawn(batcher.execute_command, "LPUSH", "batching:n", "x")
    gevent.joinall([*good, bad, wrong])
    assert sorted(call.value for call in good) == list(range(1, 21))
    assert isinstance(bad.exception, NoScriptError)
    assert isinstance(wrong.exception, ResponseError) and "WRONGTYPE" in str(wrong.exception)
    client.delete("batching:n")


def test_a_connection_lost_mid_round_trip_fails_the_callers_left_then_reconnects(
    client: redis.Redis,
) -> None:
    batcher = Batcher(client)
    own_id = batcher.execute_command("CLIENT", "ID")
    # One round-trip: Redis answers the kill of its own connection, then closes it unread.
    kill = gevent.spawn(
        batcher.execute_command, "CLIENT", "KILL", "ID", str(own_id), "SKIPME", "no"
    )
    left = [gevent.spawn(batcher.execute_command, "PING") for _ in range(5)]
    gevent.joinall([kill, *left])
    assert kill.value == 1
    assert all(isinstance(call.exception, ConnectionError) for call in left)
    assert batcher.execute_command("ECHO", "again") == "again"


def test_a_redis_that_cannot_be_reached_fails_the_callers_instead_of_hanging_them() -> None:
    nobody = connect(f"redis://127.0.0.1:{free_port()}", max_connections=4, timeout=0.5)
    batcher = Batcher(nobody)
    for _ in range(2):  # the first failure leaves no state behind that hangs the next calls
        calls = [gevent.spawn(batcher.execute_command, "PING") for _ in range(5)]
        assert gevent.joinall(calls, timeout=10) and all(call.ready() for call in calls)
        assert all(isinstance(call.exception, ConnectionError) for call in calls)


def test_a_command_that_cannot_be_packed_fails_its_caller_only(client: redis.Redis) -> None:
    batcher = Batcher(client)
    good = [gevent.spawn(batcher.execute_command, "ECHO", f"reply-{n}") for n in range(5)]
    bad = gevent.spawn(batcher.execute_command, "ECHO", object())
    gevent.joinall([*good, bad])
    assert [call.value for call in good] == [f"reply-{n}" for n in range(5)]
    assert isinstance(bad.exception, DataError)


def test_a_connection_the_server_closed_while_idle_is_replaced_before_use(
    client: redis.Redis,
) -> None:
    """Redis (its `timeout` setting) or a proxy in between may close an idle connection. The
    flusher notices before it sends, as redis-py's pool does on checkout, instead of failing
    the next round-trip's callers with 503s."""
    batcher = Batcher(client)
    assert batcher.execute_command("CLIENT", "SETNAME", "idle-batcher") == "OK"
    (idle,) = [c for c in client.client_list() if c["name"] == "idle-batcher"]
    client.client_kill_filter(_id=idle["id"])  # what an idle timeout does...
    gevent.sleep(_IDLE_CHECK_AFTER + 0.1)  # ...to a connection idle at least this long
    calls = [gevent.spawn(batcher.execute_command, "ECHO", f"after-{n}") for n in range(5)]
    gevent.joinall(calls)
    assert [call.value for call in calls] == [f"after-{n}" for n in range(5)]


def test_a_crowd_that_hears_noscript_loads_the_script_once(
    client: redis.Redis, redis_url: str
) -> None:
    """Redis restarted (or is new) and forgot the scripts: every call of the round-trip hears
    NOSCRIPT at once. One of them loads the script and the others retry; loading it once each,
    through a pool connection each, a crowd of thousands kept most of its calls waiting for a
    connection for seconds."""
    inventory = Inventory(connect(redis_url, max_connections=4, timeout=5))
    inventory._execute = Batcher(client).execute_command  # as in a gevent worker
    client.script_flush()
    loads_before = _script_loads(client)
    gevent.joinall(_records(inventory, 40), raise_error=True)
    assert _script_loads(client) - loads_before == 1
    outbox = inventory.read_outbox("batching-sale")
    assert sorted(entry.attempt_key for entry in outbox) == sorted(f"k{n}" for n in range(40))
    client.delete(*client.keys("*batching-sale*"))


def test_the_first_calls_of_a_sale_share_round_trips_not_the_pool(
    client: redis.Redis, redis_url: str
) -> None:
    """Every call a request makes goes through the round-trips the Batcher shares, also the
    ones made once per sale (its layout, its outbox's registration): a crowd's first requests
    all make them at once, and a pool connection each kept most of them waiting for seconds.
    Here the pool has no connection to give."""
    inventory = Inventory(connect(redis_url, max_connections=1, timeout=1))
    inventory.load_scripts()
    inventory._execute = Batcher(client).execute_command  # as in a gevent worker
    pool = inventory._client.connection_pool
    held = pool.get_connection()
    try:
        calls = [gevent.spawn(inventory.register_outbox, "batching-sale") for _ in range(20)]
        gevent.joinall([*calls, *_records(inventory, 20)], raise_error=True)
    finally:
        pool.release(held)
    assert len(inventory.read_outbox("batching-sale")) == 20
    assert "batching-sale" in inventory.registered_sales()
    client.delete(*client.keys("*batching-sale*"))
    client.srem(OUTBOX_REGISTRY, "batching-sale")


def _records(inventory: Inventory, count: int) -> list[gevent.Greenlet]:
    """`count` greenlets, each recording a shed checkout of the test's sale at once."""
    return [
        gevent.spawn(
            inventory.record_attempt,
            "batching-sale",
            "overloaded",
            now_ms=0,
            user_id=f"u{n}",
            item_id="1",
            attempt_key=f"k{n}",
        )
        for n in range(count)
    ]


def _script_loads(client: redis.Redis) -> int:
    return client.info("commandstats").get("cmdstat_script|load", {}).get("calls", 0)
