"""One sale over K Redis shards, in this process: where its data lives (items dealt round the
shards, a user's tokens on the user's shard, the code naming both), and shard tags that land on
distinct primaries of the session's Redis Cluster. Every guarantee through `flashsale serve` on
the Cluster is in tests/system/test_sharding.py."""

from __future__ import annotations

import dataclasses
import zlib
from collections import Counter

import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot

from flashsale.config import Settings
from flashsale.domain import SaleError
from flashsale.sale.keeper import SaleKeeper
from flashsale.sale.service import SaleService
from flashsale.stores.inventory.keys import keys_for
from flashsale.wiring import build_database, build_inventory
from tests.support.servers import RedisClusterServers
from tests.support.service import Clock
from tests.support.stores import redis_client, sql

K = 3


def test_a_sharded_sale_deals_items_users_and_records_round_its_shards(
    settings: Settings, clock: Clock
) -> None:
    sharded = dataclasses.replace(settings, redis_shards=K)
    keeper = SaleKeeper(sharded, build_inventory(sharded), build_database(sharded, 2), clock=clock)
    service = SaleService(sharded, build_inventory(sharded), build_database(sharded), clock=clock)
    sale, _ = keeper.open_sale()
    assert sale.shard_tags == ("0", "1", "2")
    shard = [keys_for(sale.sale_id, tag) for tag in sale.shard_tags]
    client = redis_client(settings.redis_url)
    assert [client.hlen(keys.items) for keys in shard] == [17, 17, 16]  # 50 items dealt round
    assert client.hget(shard[1].items, "5") == "-"  # item 5 is the second shard's: (5-1) mod 3

    for user, item in (("ann", "5"), ("bob", "7"), ("cy", "9")):
        reservation = service.checkout(user, item)
        item_shard, user_shard = (int(item) - 1) % K, zlib.crc32(user.encode()) % K
        # The code names both shards, and keeps its 22 random characters last.
        assert reservation.code.split(".")[1:3] == [str(item_shard), str(user_shard)]
        assert client.hget(shard[item_shard].items, item).startswith("R ")
        assert client.zscore(shard[user_shard].user(user), item) == reservation.expires_ms
        assert service.purchase(reservation.code).item_id == item
        assert client.zscore(shard[user_shard].user(user), item) == float("inf")
    keeper.sweep()
    rows = sql(settings.database_url, "SELECT outcome FROM checkout_attempts")
    assert rows == [("ok",)] * 3
    status = service.status()
    assert (status["items_sold"], status["total_items"]) == (3, 50)


def test_shard_tags_land_on_distinct_primaries(redis_cluster: RedisClusterServers) -> None:
    inventory = build_inventory(
        Settings.from_env({"REDIS_URL": redis_cluster.url, "FLASHSALE_REDIS_CLUSTER": "on"})
    )
    with RedisCluster.from_url(redis_cluster.url) as cluster:
        for k, per_primary in ((3, 1), (6, 2)):
            tags = inventory.shard_tags("20300101T000000Z-3600", k)
            owners = Counter(
                cluster.nodes_manager.slots_cache[
                    key_slot(f"sale:20300101T000000Z-3600/{tag}".encode())
                ][0].name
                for tag in tags
            )
            assert len(tags) == len(set(tags)) == k
            assert sorted(owners.values()) == [per_primary] * 3, owners


def test_losing_only_the_first_shard_keeps_the_tokens_the_others_hold(
    settings: Settings, clock: Clock
) -> None:
    """Shard 0's node loses its data; the others keep theirs. The rebuild loads shard 0 alone:
    a surviving shard's user sets stay as they were, so a user at the limit (a purchase and two
    reservations, none of them on shard 0) is still at it. Rebuilding every shard instead
    rewrote those sets from PostgreSQL's purchases and dropped the live reservations' tokens."""
    sharded = dataclasses.replace(settings, redis_shards=K)
    keeper = SaleKeeper(sharded, build_inventory(sharded), build_database(sharded, 2), clock=clock)
    service = SaleService(sharded, build_inventory(sharded), build_database(sharded), clock=clock)
    sale, _ = keeper.open_sale()
    user = next(f"u{n}" for n in range(100) if zlib.crc32(f"u{n}".encode()) % K == 1)
    # Items 2 and 5 are shard 1's, 3 and 6 shard 2's: (item - 1) mod 3.
    assert service.purchase(service.checkout(user, "2").code).item_id == "2"
    service.checkout(user, "3")
    service.checkout(user, "5")
    keeper.sweep()  # every answer in PostgreSQL
    client = redis_client(settings.redis_url)
    lost = keys_for(sale.sale_id, sale.shard_tags[0])
    client.delete(*client.keys(lost.prefix + "*"))
    assert keeper.inventory.missing(sale) == [0]

    keeper.sweep()  # rebuilds shard 0
    assert keeper.inventory.missing(sale) == []
    held = client.zrange(keys_for(sale.sale_id, sale.shard_tags[1]).user(user), 0, -1)
    assert sorted(held) == ["2", "3", "5"]
    with pytest.raises(SaleError) as refused:
        service.checkout(user, "6")
    assert refused.value.code == "user_limit_reached"
