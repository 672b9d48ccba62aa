"""One sale over K Redis shards: where its data lives, and every guarantee on a real three-node
Redis Cluster with K = 3: a user's racing checkouts, a sell-out, and a node that loses its data
mid-sale and is rebuilt."""

from __future__ import annotations

import dataclasses
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import redis
import requests
from redis.cluster import RedisCluster
from redis.crc import key_slot

from flashsale.config import Settings
from flashsale.sale.keeper import SaleKeeper
from flashsale.sale.service import SaleService
from flashsale.stores.inventory.keys import keys_for
from flashsale.wiring import build_database, build_inventory
from tests.faults.harness import Shoppers, check_sale, query, sale_id_of, sell_out, wait_settled
from tests.servers import RedisClusterServers
from tests.support import Clock, flashsale, redis_client, serving

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
    rows = query({"DATABASE_URL": settings.database_url}, "SELECT outcome FROM checkout_attempts")
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


def cluster_env(service_env: dict[str, str], cluster: RedisClusterServers, **more: str) -> dict:
    for node in cluster.nodes:
        redis.Redis(port=node.port).flushall()
    return {
        **service_env,
        "REDIS_URL": cluster.url,
        "FLASHSALE_REDIS_CLUSTER": "on",
        "FLASHSALE_REDIS_SHARDS": str(K),
        **more,
    }


def test_one_user_racing_forty_checkouts_never_passes_the_limit(
    redis_cluster: RedisClusterServers, service_env: dict[str, str], tmp_path: Path
) -> None:
    """40 checkouts of one user for 40 items at once, through two workers, their items on every
    shard and the user on one: no more than the limit is ever reserved, and every request is
    one row with the outcome it was answered."""
    env = cluster_env(service_env, redis_cluster, FLASHSALE_ITEMS="60", FLASHSALE_USER_LIMIT="3")
    sale_id = sale_id_of(env)
    answers: list[tuple[str, str]] = []
    lock = threading.Lock()
    with serving(env, tmp_path, workers=2) as (base, _):
        start = threading.Barrier(40)

        def racer(item: int) -> None:
            with requests.Session() as http:
                start.wait()
                r = http.post(f"{base}/checkout", params={"user_id": "racer", "id": item})
                outcome = "ok" if r.status_code == 200 else r.json()["error"]["code"]
                with lock:
                    answers.append((str(item), outcome))

        racers = [threading.Thread(target=racer, args=(item,)) for item in range(1, 41)]
        for thread in racers:
            thread.start()
        for thread in racers:
            thread.join(30)
        wait_settled(env, sale_id)
    outcomes = Counter(outcome for _, outcome in answers)
    assert outcomes["ok"] == 3 and outcomes["user_limit_reached"] == 37, outcomes
    rows = query(env, "SELECT item_id, outcome FROM checkout_attempts WHERE user_id = 'racer'")
    assert Counter(rows) == Counter(answers)


def test_a_sharded_sale_sells_out_exactly_and_audits_clean(
    redis_cluster: RedisClusterServers, service_env: dict[str, str], tmp_path: Path
) -> None:
    env = cluster_env(
        service_env,
        redis_cluster,
        FLASHSALE_ITEMS="90",
        FLASHSALE_USER_LIMIT="4",
        FLASHSALE_CHECKOUT_TTL="2",
        FLASHSALE_PENDING_GRACE="3",
    )
    sale_id = sale_id_of(env)
    with serving(env, tmp_path, workers=2) as (base, _):
        shoppers = Shoppers(base, items=90, users=40, threads=8)
        with shoppers.running(timeout=60):
            pass
        sell_out(shoppers, env, sale_id, 90)
        check_sale(env, sale_id, shoppers.tally, sold=90, limit=4)
        status = requests.get(f"{base}/sale/status", timeout=10).json()
        assert (status["items_sold"], status["remaining_items"]) == (90, 0)
        # A pod hears each shard's sold-out from its replies, else reads it again after a
        # second (docs/scaling.md): past that bound every pod answers sold_out.
        time.sleep(1.1)
        sold_out = requests.post(
            f"{base}/checkout", params={"user_id": "late", "id": "1"}, timeout=10
        )
        assert sold_out.json()["error"]["code"] == "sold_out"


def test_a_node_that_loses_its_data_mid_sale_is_rebuilt(
    redis_cluster: RedisClusterServers, service_env: dict[str, str], tmp_path: Path
) -> None:
    """Half way through the sale one node of the cluster loses everything (a restart without
    AOF). The sweep rebuilds its shards from PostgreSQL and the surviving shards; the sale then
    sells out exactly, no user passes the limit, and the audit is clean."""
    env = cluster_env(
        service_env,
        redis_cluster,
        FLASHSALE_ITEMS="90",
        FLASHSALE_USER_LIMIT="4",
        FLASHSALE_CHECKOUT_TTL="2",
        FLASHSALE_PENDING_GRACE="3",
    )
    sale_id = sale_id_of(env)
    with serving(env, tmp_path, workers=2) as (base, _):
        shoppers = Shoppers(base, items=90, users=40, threads=8)
        with shoppers.running(timeout=90):
            assert shoppers.wait_until(lambda: shoppers.purchased() >= 45, 40)
            shoppers.pause()
            wait_settled(env, sale_id)  # what was answered is in PostgreSQL
            victim = redis_cluster.nodes[1]
            redis.Redis(port=victim.port).flushall()
            flashsale("sweep", env=env)  # the pod's sweeper would too, within a second
            shoppers.resume()
        sell_out(shoppers, env, sale_id, 90)
        check_sale(env, sale_id, shoppers.tally, sold=90, limit=4)
