"""The service on a real three-node Redis Cluster (the session's): every sale's keys live in one
slot, so each script runs on one node, and a sale sells out exactly as on a single Redis."""

from __future__ import annotations

import threading
from pathlib import Path

import redis
import requests

from flashsale.config import Settings
from flashsale.stores.inventory.keys import keys_for
from tests.support.processes import flashsale, serving
from tests.support.servers import RedisClusterServers
from tests.support.stores import flush_redis


def test_a_sale_sells_out_exactly_on_redis_cluster(
    redis_cluster: RedisClusterServers, service_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **service_env,
        "REDIS_URL": redis_cluster.url,
        "FLASHSALE_REDIS_CLUSTER": "1",
        "FLASHSALE_ITEMS": "60",
        "FLASHSALE_USER_LIMIT": "5",
    }
    flush_redis(Settings.from_env(env))  # the session's cluster: other tests' sales go
    opened = flashsale("open-sale", env=env)
    assert '"loaded": true' in opened.stdout, opened.stderr
    sale_id = opened.stdout.split('"sale_id": "')[1].split('"')[0]

    sold: list[str] = []
    lock = threading.Lock()
    with serving(env, tmp_path) as (base, _):

        def shopper(user: int) -> None:
            with requests.Session() as http:
                for item in range(1, 61):
                    r = http.post(f"{base}/checkout", params={"user_id": f"u{user}", "id": item})
                    if r.status_code != 200:
                        continue
                    p = http.post(f"{base}/purchase", params={"code": r.json()["code"]})
                    if p.status_code == 200:
                        with lock:
                            sold.append(p.json()["item_id"])

        shoppers = [threading.Thread(target=shopper, args=(u,)) for u in range(20)]
        for t in shoppers:
            t.start()
        for t in shoppers:
            t.join(timeout=120)
        status = requests.get(f"{base}/sale/status").json()

    assert sorted(sold, key=int) == [str(i) for i in range(1, 61)]  # each item once, all sold
    assert status["items_sold"] == 60 and status["remaining_items"] == 0
    flashsale("sweep", env=env)
    audit = flashsale("audit", "--sale", sale_id, env=env, check=False)
    assert audit.returncode == 0, audit.stdout + audit.stderr

    # All of the sale's keys hash to one slot, owned by one node.
    keys = keys_for(sale_id)
    probe = redis.Redis.from_url(redis_cluster.url)
    slots = {
        probe.execute_command("CLUSTER KEYSLOT", key)
        for key in (keys.meta, keys.items, keys.codes, keys.outbox, keys.user("u1"))
    }
    assert len(slots) == 1
