"""`flashsale dev`: the whole service on one machine, stopped cleanly by Ctrl-C.

It listens on 127.0.0.1 unless told otherwise (`--host` or HOST): a laptop's service is not the
network's. The stores are REDIS_URL / DATABASE_URL when set, else servers started here, kept in
FLASHSALE_STATE_DIR between runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from flashsale.config import Settings
from flashsale.dev.servers import die_with_parent, start_postgres, start_redis
from flashsale.sale.keeper import run_forever
from flashsale.stores.migrate import migrate
from flashsale.wiring import build_keeper

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
READY_TIMEOUT = 60.0


def run_dev(settings: Settings, host: str | None = None) -> int:
    """Start the stores (unless given), open the sale, run the sweeper here and the web tier
    (`flashsale serve`) as a child; return when that child exits or on Ctrl-C."""
    state = Path(settings.state_dir).resolve()
    env = dict(os.environ)
    env["HOST"] = host or settings.host or DEFAULT_HOST
    with contextlib.ExitStack() as stack:
        if not settings.redis_url:
            env["REDIS_URL"] = stack.enter_context(start_redis(state / "redis")).url
        if not settings.database_url:
            env["DATABASE_URL"] = stack.enter_context(start_postgres(state / "postgres")).url
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
            preexec_fn=die_with_parent,
        )
        stack.callback(_stop_process, web)
        stack.callback(stop.set)
        try:
            base = f"http://{_reachable(settings.host)}:{settings.port}"
            if _wait_until_healthy(base, web):
                print(banner(settings, base, state), flush=True)
            return web.wait()
        except KeyboardInterrupt:
            print("\nstopping...", flush=True)
            return 0


def banner(settings: Settings, base: str, state: Path) -> str:
    """What a newcomer needs next: where it listens, the stores, and commands to paste."""
    stores = f"REDIS_URL={shlex.quote(settings.redis_url)} "
    stores += f"DATABASE_URL={shlex.quote(settings.database_url)}"
    query = "SELECT outcome, count(*) FROM checkout_attempts GROUP BY outcome"
    return "\n".join(
        [
            "",
            f"flashsale dev is up at {base}   (Ctrl-C stops everything)",
            f"  listening on  {settings.host}:{settings.port}",
            f"  Redis         {settings.redis_url}",
            f"  PostgreSQL    {settings.database_url}",
            f"  state         {state}",
            "",
            "Try it:",
            f"  curl -s {base}/sale/status",
            f"  curl -s '{base}/sale/items?limit=3'",
            f"  curl -s -X POST '{base}/checkout?user_id=alice&id=1'",
            "Compare Redis with PostgreSQL for the current sale:",
            f"  {stores} {_console_script()} audit",
            "The records (tables sales, items, checkout_attempts, purchases):",
            f"  psql {shlex.quote(settings.database_url)} -c {shlex.quote(query)}",
            "",
        ]
    )


def _reachable(host: str) -> str:
    """The address a client on this machine uses to reach a server listening on `host`."""
    return "127.0.0.1" if host == "0.0.0.0" else host  # noqa: S104 - a client, not a bind


def _console_script() -> str:
    """How to call this same `flashsale` from the shell that started it."""
    script = Path(sys.executable).parent / "flashsale"
    found = shutil.which("flashsale")
    if found and Path(found).resolve() == script.resolve():
        return "flashsale"
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m flashsale"
    with contextlib.suppress(ValueError):
        return shlex.quote(str(script.relative_to(Path.cwd())))
    return shlex.quote(str(script))


def _wait_until_healthy(base: str, web: subprocess.Popen) -> bool:
    """True once /healthz answers; False if the web tier exited first (it logged why)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while web.poll() is None and time.monotonic() < deadline:
        url = f"{base}/healthz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as answer:  # noqa: S310
            if answer.status == 200:
                return True
        time.sleep(0.2)
    if web.poll() is None:
        log.warning("the web tier did not answer /healthz in time", extra={"url": base})
        return True
    return False


def _stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
