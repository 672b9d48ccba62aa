"""`flashsale crowd`: a demo crowd of shoppers at a running flashsale service (`flashsale dev`'s
by default), bounded by --duration, that shows a sale burning down on the status page.

The --users shoppers (shoppers.py) share --connections keep-alive connections: a thread per
connection takes the next shopper due, sends its one request and puts it back for when it acts
again. The main thread looks at the sale every second (GET /sale/status; the items once per
sale, GET /sale/items; which of them are available, GET /sale/stock), prints one line of
progress, and stops the crowd at --duration, or once the sale is sold out and no next sale opens
within the duration; then it prints a summary. Only the standard library (threads, http.client):
it runs wherever the service is installed, and talks to the --url it is given and nothing else.
"""

from __future__ import annotations

import heapq
import itertools
import random
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from flashsale.dev.shoppers import TIMEOUT, Client, SaleView, Shopper, Tally, Target
from flashsale.domain import parse_rfc3339

LOOK_EVERY = 1.0  # seconds between two looks at the sale (and two progress lines on a terminal)
LOG_EVERY = 5.0  # seconds between two progress lines when stdout is not a terminal
# Shoppers arrive over the first this many seconds after the crowd sees a sale open (a third of
# the duration when that is shorter), as a crowd does, rather than all in the same instant.
SPREAD = 20.0
PAGE = 1000  # items per page of /sale/items and /sale/stock


@dataclass(frozen=True)
class CrowdOptions:
    url: str
    users: int = 500
    duration: float = 60.0
    abandon: float = 0.3
    limit: int = 10
    connections: int = 32

    def problems(self) -> list[str]:
        """What is wrong with these options, as sentences for the command line."""
        found = []
        try:
            Target.parse(self.url)
        except ValueError as error:
            found.append(str(error))
        if not 1 <= self.users <= 100_000:
            found.append(f"--users must be from 1 to 100000, got {self.users}")
        if not 0 < self.duration <= 86_400:
            found.append(f"--duration must be more than 0 and at most 86400 s, got {self.duration}")
        if not 0 <= self.abandon <= 1:
            found.append(f"--abandon must be from 0 to 1, got {self.abandon}")
        if self.limit < 1:
            found.append(f"--limit must be at least 1, got {self.limit}")
        if not 1 <= self.connections <= 256:
            found.append(f"--connections must be from 1 to 256, got {self.connections}")
        return found


class Schedule:
    """Shoppers by when they act next; the connection threads take them when due."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Shopper]] = []
        self._order = itertools.count()
        self._ready = threading.Condition()

    def put(self, due: float, shopper: Shopper) -> None:
        with self._ready:
            heapq.heappush(self._heap, (due, next(self._order), shopper))
            self._ready.notify()

    def take(self, stopped: Callable[[], bool]) -> Shopper | None:
        """The next shopper due, once due; None once the crowd stops."""
        with self._ready:
            while not stopped():
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    return heapq.heappop(self._heap)[2]
                wait = self._heap[0][0] - now if self._heap else LOOK_EVERY
                self._ready.wait(min(wait, LOOK_EVERY))
            return None

    def wake_all(self) -> None:
        with self._ready:
            self._ready.notify_all()


class Crowd:
    """One run of the crowd against one service."""

    def __init__(self, options: CrowdOptions, out: TextIO):
        self.options = options
        self.target = Target.parse(options.url)
        self.out = out
        self.tally = Tally()
        self.view = SaleView()
        self.sales: dict[str, dict[str, Any]] = {}  # sale id -> its last status seen
        self._looker = Client(self.target, self.tally)
        self._stop = threading.Event()
        self._schedule = Schedule()
        self._spread = min(SPREAD, options.duration / 3)
        self._items: list[str] = []  # the open sale's item ids

    def run(self) -> int:
        """Drive the crowd until the duration is over or nothing more can be sold in it; print the
        summary. 0; 1 when the service never answered; 130 when interrupted (Ctrl-C)."""
        options = self.options
        started = time.monotonic()
        deadline = started + options.duration
        waiting_room = self._has_waiting_room()
        tag = secrets.token_hex(3)  # this run's users are new users, also in a sale seen before
        seeds = random.Random()  # noqa: S311 - a demo crowd's whims, not secrets
        for n in range(options.users):
            shopper = Shopper(
                f"crowd-{tag}-{n}",
                random.Random(seeds.random()),  # noqa: S311 - one generator per shopper
                options.limit,
                options.abandon,
                waiting_room,
            )
            self._schedule.put(started, shopper)
        threads = [
            threading.Thread(target=self._work, name=f"crowd-{n}", daemon=True)
            for n in range(min(options.connections, options.users))
        ]
        for thread in threads:
            thread.start()
        display = Display(self.out, started, options.duration)
        reason, status = "its duration ran out", 0
        try:
            while True:
                self._look()
                display.show(self)
                now = time.monotonic()
                if now >= deadline:
                    break
                view = self.view
                if (
                    view.sale_id
                    and view.remaining == 0
                    and view.ends_at >= time.time() + (deadline - now)
                ):
                    reason = "the sale is sold out and the next one opens after the duration"
                    break
                time.sleep(max(0.0, min(LOOK_EVERY, deadline - now)))
        except KeyboardInterrupt:
            reason, status = "interrupted", 130
        finally:
            self._stop.set()
            self._schedule.wake_all()
            for thread in threads:
                thread.join(TIMEOUT + 1)
            self._looker.close()
        display.finish()
        self.out.write(summary(self, time.monotonic() - started, reason))
        self.out.flush()
        if not self.tally.answered:
            print(f"flashsale crowd: nothing answered at {self.target}", file=sys.stderr)
            return 1
        return status

    def _work(self) -> None:
        client = Client(self.target, self.tally)
        try:
            while (shopper := self._schedule.take(self._stop.is_set)) is not None:
                delay = shopper.step(client, self.view, self.tally, self._spread)
                self._schedule.put(time.monotonic() + delay, shopper)
        finally:
            client.close()

    def _has_waiting_room(self) -> bool:
        """The waiting room is on when the service's OpenAPI document has POST /queue."""
        answer = self._looker.call("GET", "/openapi.json")
        return answer.code == "ok" and "/queue" in (answer.body or {}).get("paths", {})

    def _look(self) -> None:
        """The sale as it stands: its figures, and the items available now."""
        answer = self._looker.call("GET", "/sale/status")
        if answer.code == "no_active_sale":
            if self.view.sale_id is not None or self.view.retry_after != answer.retry_after:
                self.view = SaleView(retry_after=answer.retry_after or 1.0)
            return
        if answer.code != "ok":
            return  # rate limited, unreachable: the shoppers go on with what they knew
        status = answer.body
        self.sales[status["sale_id"]] = status
        if status["sale_id"] != self.view.sale_id:
            items = self._pages("/sale/items")
            if items is None:
                return
            self._items = [item["id"] for item in items]
            self.view = SaleView(
                status["sale_id"],
                parse_rfc3339(status["ends_at"]),
                status["remaining_items"],
                list(self._items),
                seen_at=time.monotonic(),
            )
        self.view.remaining = status["remaining_items"]
        stock = self._pages("/sale/stock")
        if stock is not None:
            self.view.available = [item["id"] for item in stock if item["state"] == "available"]

    def _pages(self, path: str) -> list[dict[str, Any]] | None:
        """Every item of the open sale from a paged read; None if a page was refused."""
        found: list[dict[str, Any]] = []
        params = {"limit": str(PAGE)}
        while True:
            answer = self._looker.call("GET", path, params)
            if answer.code != "ok":
                return None
            found += answer.body["items"]
            if not answer.body["next_cursor"]:
                return found
            params = {"limit": str(PAGE), "cursor": answer.body["next_cursor"]}


class Display:
    """One line of progress: rewritten every second on a terminal, else printed every 5 s."""

    def __init__(self, out: TextIO, started: float, duration: float):
        self._out = out
        self._tty = out.isatty()
        self._started = started
        self._duration = duration
        self._last: tuple[float, int] = (started, 0)  # (when, requests by then)
        self._printed = 0.0

    def show(self, crowd: Crowd) -> None:
        now = time.monotonic()
        if not self._tty and now - self._printed < LOG_EVERY:
            return
        requests = crowd.tally.requests
        rate = (requests - self._last[1]) / max(LOOK_EVERY, now - self._last[0])
        self._last = (now, requests)
        self._printed = now
        line = progress(crowd, now - self._started, self._duration, rate)
        if self._tty:
            width = shutil.get_terminal_size((120, 20)).columns - 1
            self._out.write("\r" + line[:width].ljust(width))
        else:
            self._out.write(line + "\n")
        self._out.flush()

    def finish(self) -> None:
        if self._tty:
            self._out.write("\n")


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"


def _outcomes(counts: dict[str, int]) -> str:
    return ", ".join(f"{code} {n}" for code, n in counts.items()) or "none"


def progress(crowd: Crowd, elapsed: float, duration: float, rate: float) -> str:
    """sold / reserved / remaining of the open sale, requests a second, outcomes so far."""
    view = crowd.view
    status = crowd.sales.get(view.sale_id or "")
    if status is None:
        sale = "no sale open"
    else:
        sale = (
            f"sold {status['items_sold']}/{status['total_items']}"
            f"  reserved {status['items_reserved']}  remaining {status['remaining_items']}"
        )
        if status["remaining_items"] == 0:
            sale += "  SOLD OUT"
    parts = [
        f"[{_clock(elapsed)}/{_clock(duration)}] {sale}",
        f"{rate:.0f} req/s",
        f"checkout: {_outcomes(crowd.tally.of('checkout'))}",
        f"purchase: {_outcomes(crowd.tally.of('purchase'))}",
    ]
    return " | ".join(parts)


def summary(crowd: Crowd, elapsed: float, reason: str) -> str:
    """What the crowd did, what it was answered, and what became of each sale it saw."""
    tally, options = crowd.tally, crowd.options
    lines = [
        f"flashsale crowd: {options.users} users for {elapsed:.1f} s against {crowd.target}"
        f" (stopped: {reason})",
        f"  requests   {tally.requests} ({tally.requests / max(elapsed, 1e-3):.0f}/s),"
        f" {tally.requests - tally.answered} unanswered",
        f"  checkouts  {_outcomes(tally.of('checkout'))}",
        f"  purchases  {_outcomes(tally.of('purchase'))}",
    ]
    if tally.of("queue"):
        lines.append(f"  queue      {_outcomes(tally.of('queue'))}")
    waits = ", ".join(f"{code} {n}" for code, n in tally.waits.most_common())
    lines.append(f"  Retry-After honoured {sum(tally.waits.values())} times ({waits or 'none'})")
    for sale_id, status in crowd.sales.items():
        sold_out = ", sold out" if status["remaining_items"] == 0 else ""
        lines.append(
            f"  sale {sale_id}: the crowd bought {tally.bought[sale_id]}, abandoned"
            f" {tally.abandoned[sale_id]}; last seen sold {status['items_sold']}"
            f"/{status['total_items']}{sold_out}"
        )
    lines.append(
        f"  most items one user held at once: {tally.most_held} (limit {options.limit},"
        f" abandon {options.abandon:.0%})"
    )
    return "\n".join(lines) + "\n"


def run_crowd(options: CrowdOptions, out: TextIO = sys.stdout) -> int:
    """The command: 2 with the reasons (on stderr) when the options are wrong, else the crowd's
    exit status."""
    problems = options.problems()
    if problems:
        for problem in problems:
            print(f"flashsale crowd: {problem}", file=sys.stderr)
        return 2
    return Crowd(options, out).run()
