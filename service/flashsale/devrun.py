"""`flashsale dev`: the whole service on one machine, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from flashsale import devservers
from flashsale.config import Settings
from flashsale.sale.keeper import run_forever
from flashsale.stores.migrate import migrate
from flashsale.wiring import build_keeper

log = logging.getLogger(__name__)


def run_dev(settings: Settings) -> int:
    state = Path(os.environ.get("FLASHSALE_STATE_DIR", ".flashsale")).resolve()
    env = dict(os.environ)
    with contextlib.ExitStack() as stack:
        if not settings.redis_url or not settings.database_url:
            if not settings.redis_url:
                redis_server = stack.enter_context(devservers.start_redis(state / "redis"))
                env["REDIS_URL"] = redis_server.url
            if not settings.database_url:
                postgres = stack.enter_context(devservers.start_postgres(state / "postgres"))
                env["DATABASE_URL"] = postgres.url
        settings = Settings.from_env(env)
        migrate(settings.database_url)
        keeper = build_keeper(settings)
        for sale in keeper.open_due(settings.preload_seconds):
            log.info("sale open", extra={"sale_id": sale.sale_id, "items": sale.total_items})

        stop = threading.Event()
        jobs = [
            ("opener", lambda: keeper.open_due(settings.preload_seconds), 1.0),
            ("sweeper", lambda: keeper.sweep(), settings.sweep_interval),
        ]
        for name, step, interval in jobs:
            threading.Thread(
                target=run_forever, args=(step, interval, stop.is_set, name), name=name, daemon=True
            ).start()

        # The web tier as in production; this process already runs the sweeper, which drains.
        env.update(FLASHSALE_SWEEPER="off", PROMETHEUS_MULTIPROC_DIR=str(state / "metrics"))
        # Its own session: Ctrl-C reaches only us, and we stop gunicorn gracefully (SIGTERM).
        web = subprocess.Popen(
            [sys.executable, "-m", "flashsale", "serve"],
            env=env,
            start_new_session=True,
            preexec_fn=devservers.die_with_parent,
        )
        stack.callback(_stop_process, web)
        stack.callback(stop.set)
        base = f"http://127.0.0.1:{settings.port}"
        print(
            f"\nflashsale dev is up at {base}   (state in {state}; Ctrl-C stops everything)\n"
            f"  curl -s {base}/sale/status\n"
            f"  curl -s '{base}/sale/items?limit=3'\n"
            f"  curl -s -X POST '{base}/checkout?user_id=alice&id=1'\n",
            flush=True,
        )
        try:
            return web.wait()
        except KeyboardInterrupt:
            print("\nstopping...", flush=True)
            return 0


def _stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
