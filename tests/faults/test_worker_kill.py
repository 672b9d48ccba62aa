"""kill -9 of a gunicorn worker in the middle of a sell-out."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.support.crowd import ITEMS, USER_LIMIT, Shoppers, check_sale, sale_id_of, sell_out
from tests.support.processes import alive, children, gunicorn_children, serving


def test_sale_completes_after_a_worker_is_killed(fault_env: dict[str, str], tmp_path: Path):
    """The master replaces the dead worker; what the dead one had in flight is either done (in
    Redis and the outbox, atomically) or undone: a purchase it left half-way is settled by the
    sweeper against PostgreSQL, a reservation it handed out to nobody expires back to stock."""
    sale_id = sale_id_of(fault_env)
    with serving(fault_env, tmp_path, workers=2) as (base, proc):
        workers, _ = gunicorn_children(proc.pid)
        assert len(workers) == 2
        shoppers = Shoppers(base, items=ITEMS, users=80, threads=8)
        with shoppers.running(timeout=50):
            assert shoppers.wait_until(lambda: shoppers.purchased() >= ITEMS // 3, 30)
            os.kill(workers[0], signal.SIGKILL)
            assert shoppers.wait_until(lambda: not alive(workers[0]), 5)
            # The master notices and forks a replacement.
            assert shoppers.wait_until(
                lambda: (
                    len(gunicorn_children(proc.pid)[0]) == 2
                    and workers[0] not in gunicorn_children(proc.pid)[0]
                ),
                20,
            )
        assert shoppers.sold_out.is_set(), shoppers.tally.statuses
        # With the server still up: its sweeper empties the outbox and settles what is pending.
        sell_out(shoppers, fault_env, sale_id, ITEMS)
        check_sale(fault_env, sale_id, shoppers.tally, sold=ITEMS, limit=USER_LIMIT)


def test_sale_completes_after_the_sweeper_is_killed(fault_env: dict[str, str], tmp_path: Path):
    """The pod's sweeper (a child of the gunicorn master) dies by kill -9: the master starts a
    new one within about a second, and it drains what piled up meanwhile (the outbox is in
    Redis, nothing was in the dead process but work in progress, which is idempotent)."""
    sale_id = sale_id_of(fault_env)
    with serving(fault_env, tmp_path, workers=2) as (base, proc):
        _, sweepers = gunicorn_children(proc.pid)
        assert len(sweepers) == 1
        shoppers = Shoppers(base, items=ITEMS, users=80, threads=8)
        with shoppers.running(timeout=50):
            assert shoppers.wait_until(lambda: shoppers.purchased() >= ITEMS // 3, 30)
            os.kill(sweepers[0], signal.SIGKILL)
            print("killed", sweepers[0], time.strftime("%T"))
            restarted = shoppers.wait_until(
                lambda: [d for d in gunicorn_children(proc.pid)[1] if d != sweepers[0]], 20
            )
            assert restarted, children(proc.pid)  # what the master runs, for the failure message
        assert shoppers.sold_out.is_set(), shoppers.tally.statuses
        sell_out(shoppers, fault_env, sale_id, ITEMS)
        check_sale(fault_env, sale_id, shoppers.tally, sold=ITEMS, limit=USER_LIMIT)
