"""What each `flashsale` subcommand does. Each returns the process exit status."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flashsale.config import Settings
from flashsale.logs import configure_logging

log = logging.getLogger("flashsale.job")
_STARTED = time.monotonic()  # this module is imported just before the command runs


def _settings() -> Settings:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return settings


def _say(**fields: Any) -> None:
    """Job output: one JSON line on stdout that an operator can read and a script can parse, and
    the same facts as one structured log line on stderr (time, level, logger, outcome, duration)
    for the log pipeline, like every other log line of the service."""
    print(json.dumps(fields, default=str), flush=True)
    took = round((time.monotonic() - _STARTED) * 1000, 1)
    log.info("job run", extra={**fields, "outcome": "ok", "duration_ms": took})


def _job(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[..., int]]:
    """A store that cannot be reached is an expected failure of a job: one JSON line saying so
    and exit status 1 (the CronJob retries), not a stack trace."""

    def wrap(run: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
        @functools.wraps(run)
        def job(args: argparse.Namespace) -> int:
            from flashsale.stores.inventory import InventoryError
            from flashsale.stores.records import DatabaseError

            try:
                return run(args)
            except (InventoryError, DatabaseError) as error:
                took = round((time.monotonic() - _STARTED) * 1000, 1)
                log.error(
                    "job failed: store unavailable: %s",
                    str(error).strip(),
                    extra={"command": name, "outcome": "store_unavailable", "duration_ms": took},
                )
                return 1

        return job

    return wrap


def _stop_on_sigterm() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


@_job("migrate")
def migrate(args: argparse.Namespace) -> int:
    from flashsale.stores.migrate import migrate as apply
    from flashsale.wiring import build_database

    settings = _settings()
    if not settings.database_url:
        settings.require_stores()
    applied = apply(settings.database_url)
    database = build_database(settings, pool_size=1)
    today = datetime.now(UTC).date()
    made = database.ensure_attempt_partitions(today, 2)  # open-sale and sweep make the rest
    database.close()
    _say(command="migrate", applied=applied, partitions=made)
    return 0


@_job("prune")
def prune(args: argparse.Namespace) -> int:
    """Drop whole days of checkout attempts older than --older-than days (UTC). Never a
    purchase, never a sale's row; running it again drops nothing more."""
    from flashsale.wiring import build_database

    if args.older_than < 1:
        print("flashsale: --older-than must be at least 1 day", file=sys.stderr)
        return 2
    settings = _settings()
    if not settings.database_url:
        settings.require_stores()
    database = build_database(settings, pool_size=1)
    before = datetime.now(UTC).date() - timedelta(days=args.older_than)
    dropped = database.prune_attempts(before)
    database.close()
    _say(command="prune", before=before.isoformat(), dropped=dropped)
    return 0


@_job("open-sale")
def open_sale(args: argparse.Namespace) -> int:
    from flashsale.domain import parse_rfc3339
    from flashsale.wiring import build_keeper

    settings = _settings()
    try:
        at = parse_rfc3339(args.at) if args.at else None
    except ValueError:
        print(f"flashsale: --at must be an RFC 3339 instant, got {args.at!r}", file=sys.stderr)
        return 2
    keeper = build_keeper(settings)
    at = keeper.clock() if at is None else at
    sale, loaded = keeper.open_sale(at)
    _say(command="open-sale", sale_id=sale.sale_id, total_items=sale.total_items, loaded=loaded)
    if args.next:
        upcoming, loaded = keeper.open_sale(at + settings.period)
        _say(
            command="open-sale",
            sale_id=upcoming.sale_id,
            total_items=upcoming.total_items,
            loaded=loaded,
            preloaded=True,
        )
    return 0


@_job("sweep")
def sweep(args: argparse.Namespace) -> int:
    from flashsale.sale.drain import LOCK_SECONDS
    from flashsale.wiring import build_keeper

    if args.every is not None:
        return _sweep_forever(args.every, args.max_batches)
    # A job's drain is a real one: wait out a pod sweeper's lock (or one a failover orphaned).
    keeper = build_keeper(_settings())
    report = keeper.sweep(max_batches=args.max_batches, wait_for_drain=LOCK_SECONDS + 1)
    _say(command="sweep", **vars(report))
    return 0


def audit(args: argparse.Namespace) -> int:
    from flashsale.sale.audit import audit_sale
    from flashsale.wiring import build_keeper

    settings = _settings()
    keeper = build_keeper(settings)
    now_ms = int(keeper.clock() * 1000)
    sale = keeper.database.get_sale(args.sale) if args.sale else keeper.database.latest_sale(now_ms)
    if sale is None:
        print(f"flashsale: no sale {args.sale or 'in the database'}", file=sys.stderr)
        return 2
    # Pending = younger than a few drain intervals (a drainer runs every interval).
    window_ms = int(max(5.0, 5 * settings.sweep_interval) * 1000)
    # A purchase a crashed worker left half-way is pending until the sweeper settles it.
    pending_ms = window_ms + int(settings.pending_grace * 1000)
    report = audit_sale(
        keeper.inventory,
        keeper.database,
        sale,
        now_ms=now_ms,
        window_ms=window_ms,
        pending_window_ms=pending_ms,
    )
    print(report.render())
    return 0 if report.clean else 1


def _sweep_forever(interval: float, max_batches: int) -> int:
    """The pod's sweeper: a sweep every `interval` seconds until SIGTERM; a store that is away
    is logged and retried, never fatal."""
    from flashsale.sale.keeper import run_forever
    from flashsale.wiring import build_keeper

    keeper = build_keeper(_settings())
    stop = _stop_on_sigterm()

    def step() -> None:
        # One line per run that moved something; idle runs (one a second) only at DEBUG.
        started = time.monotonic()
        report = vars(keeper.sweep(max_batches=max_batches))
        worked = any(report.values())
        if log.isEnabledFor(logging.INFO if worked else logging.DEBUG):
            took = round((time.monotonic() - started) * 1000, 1)
            log.log(
                logging.INFO if worked else logging.DEBUG,
                "sweep run",
                extra={"command": "sweep", "outcome": "ok", "duration_ms": took, **report},
            )

    run_forever(step, interval, stop.is_set, "sweep")
    return 0


def serve(args: argparse.Namespace) -> int:
    """Replace this process with gunicorn, so it receives the container's signals directly."""
    from flashsale.web.identity import identity_reader

    settings = _settings()
    settings.require_stores()
    identity_reader(settings)  # a FLASHSALE_JWT_KEY it cannot use: said here, not by each worker
    env = dict(os.environ)
    env.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="flashsale-metrics-"))
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:flashsale.server.gunicorn_conf",
        "flashsale.web.wsgi:application",
    ]
    os.execve(sys.executable, argv, env)  # noqa: S606
    return 0  # not reached


def crowd(args: argparse.Namespace) -> int:
    from flashsale.dev.crowd import CrowdOptions, run_crowd

    url = args.url or f"http://127.0.0.1:{Settings.from_env().port}"
    options = CrowdOptions(
        url, args.users, args.duration, args.abandon, args.limit, args.connections
    )
    return run_crowd(options)


def dev(args: argparse.Namespace) -> int:
    from flashsale.config import dev_pass_key
    from flashsale.dev.run import run_dev

    dev_pass_key(os.environ)  # the web processes it starts inherit the key
    return run_dev(_settings(), host=args.host)
