"""The rules of a sale that do not depend on any store: errors, validation, periods, codes."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

# Every error the API can answer, in precedence order (docs/api.md#errors): where several apply,
# the earliest wins. The Lua scripts decide in the same order.
ERRORS: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "A parameter is missing or malformed."),
    "unauthenticated": (401, "This request carries no valid identity."),
    "forbidden": (403, "That belongs to another user."),
    "not_admitted": (403, "No valid waiting-room pass for this user and sale; join the queue."),
    "overloaded": (503, "The service is busier than it can answer in time; retry shortly."),
    "rate_limited": (429, "Too many requests; slow down and retry after the given delay."),
    "no_active_sale": (503, "No sale is open right now."),
    "item_not_found": (404, "That item is not part of the current sale."),
    "sold_out": (409, "Every item of this sale is sold."),
    "user_limit_reached": (403, "You already hold the maximum number of items for this sale."),
    "item_unavailable": (409, "That item is reserved by someone else or already sold."),
    "code_not_found": (404, "That purchase code is unknown."),
    "code_expired": (410, "That checkout expired before it was purchased."),
    "unavailable": (503, "A backing store is unreachable; retry shortly."),
}

_TOKEN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
# At most 18 digits: every such number is exact in an int64 and in the text it came from.
_COUNT = re.compile(r"[0-9]{1,18}")


class SaleError(Exception):
    """A decision the client must hear about, carried to the HTTP layer as an error of the
    table."""

    def __init__(self, code: str, message: str | None = None, retry_after: int | None = None):
        self.code = code
        self.status, default_message = ERRORS[code]
        self.message = message or default_message
        self.retry_after = retry_after
        super().__init__(f"{code}: {self.message}")


def valid_token(value: object) -> bool:
    """user_id and item id: 1-64 characters of A-Z a-z 0-9 _ . -"""
    return isinstance(value, str) and _TOKEN.fullmatch(value) is not None


def valid_code(value: object) -> bool:
    return isinstance(value, str) and _CODE.fullmatch(value) is not None


def parse_count(value: object) -> int | None:
    """The one reading of a non-negative integer a client sent (a page size, a cursor's
    position, an item id in a path): ASCII digits only, else None. Not `str.isdigit()` and
    `int()`: they take a superscript two (then int() raises) and Arabic-Indic digits."""
    if isinstance(value, str) and _COUNT.fullmatch(value):
        return int(value)
    return None


def retry_seconds(ms: int) -> int:
    """Milliseconds as the whole seconds of a Retry-After header: rounded up, at least 1 (a 0
    would tell a client to retry at once)."""
    return max(1, -(-ms // 1000))


def printable(value: object, limit: int = 256) -> str | None:
    """What we keep of a raw parameter: text PostgreSQL accepts, bounded in size."""
    if value is None:
        return None
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    text = str(value)[:limit]
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


# --- periods and sale ids ------------------------------------------------------------------

_SALE_ID = re.compile(r"([0-9]{8}T[0-9]{6}Z)-([0-9]+)")


def period_start(at: float, period: int) -> int:
    """Sales align to multiples of the period since the Unix epoch."""
    return int(at // period) * period


@lru_cache(maxsize=16)  # asked on every request; changes once a period
def sale_id_for(start: int, period: int) -> str:
    """Readable and unique in one database even if the period setting changes."""
    return f"{datetime.fromtimestamp(start, UTC):%Y%m%dT%H%M%SZ}-{period}"


def sale_id_at(at: float, period: int) -> str:
    """The id of the sale whose period contains the instant `at` (epoch seconds)."""
    return sale_id_for(period_start(at, period), period)


@lru_cache(maxsize=64)  # asked on every purchase (the code names its sale): a few sales a day
def sale_window(sale_id: str) -> tuple[int, int] | None:
    """(starts_at, ends_at) in epoch seconds, derived from the id; None if it is not a sale id."""
    match = _SALE_ID.fullmatch(sale_id)
    period = None if match is None else parse_count(match[2])
    if match is None or period is None:
        return None
    try:
        start = datetime.strptime(match[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:  # the shape of an id, not a date (month 13, day 32, ...)
        return None
    begin = int(start.timestamp())
    return begin, begin + period


# --- checkout codes ------------------------------------------------------------------------


def new_code(sale_id: str) -> str:
    """128 bits from `secrets`, bound to the sale so a purchase finds its sale without a lookup."""
    return f"{sale_id}.{secrets.token_urlsafe(16)}"


def new_attempt_key() -> str:
    """The name of one checkout attempt, chosen by the pod before any store decides it, so that
    every writer of its row writes the same row (96 random bits: no two pods ever meet)."""
    return secrets.token_urlsafe(12)


def sale_of_code(code: str) -> str | None:
    """The sale a code names: `<sale_id>.<random>`, or `<sale_id>.<item shard>.<user shard>.
    <random>` for a sale over several Redis shards; None if it is no code of ours."""
    sale_id, sep, rest = code.partition(".")
    if not sep or len(rest.rpartition(".")[2]) < 16 or sale_window(sale_id) is None:
        return None
    return sale_id


def rfc3339(epoch_ms: int) -> str:
    """UTC with milliseconds, e.g. 2026-11-24T22:14:00.000Z. Every answer carries one."""
    seconds, millis = divmod(int(epoch_ms), 1000)
    return f"{_utc_second(seconds)}.{millis:03d}Z"


@lru_cache(maxsize=8)  # answers given within the same second share it
def _utc_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def parse_rfc3339(text: str) -> float:
    """An instant as epoch seconds; naive times are taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True)
class Caller:
    """Who makes a request, as the HTTP layer saw it. The service applies the API's rules to
    it, in the error table's order (an unauthenticated caller is refused after a malformed
    parameter, before any rate limit)."""

    address: str = ""  # client address for the per-address limits; "" when they are off
    user: str | None = None  # the authenticated user, when FLASHSALE_AUTH is on
    unauthenticated: bool = False  # identity is on and the request carried none, or a bad one
    admission_pass: str | None = None  # the waiting room's pass (X-Flashsale-Pass)


ANONYMOUS = Caller()


@dataclass(frozen=True)
class Sale:
    sale_id: str
    starts_at: int  # epoch seconds
    ends_at: int
    total_items: int
    user_limit: int
    seed: str
    # The hash tags of its Redis shards (FLASHSALE_REDIS_SHARDS), chosen when it opened; empty
    # for a sale on one hash tag.
    shard_tags: tuple[str, ...] = ()

    @property
    def shards(self) -> int:
        return len(self.shard_tags) or 1

    @property
    def starts_ms(self) -> int:
        return self.starts_at * 1000

    @property
    def ends_ms(self) -> int:
        return self.ends_at * 1000

    def open_at(self, now_ms: int) -> bool:
        return self.starts_ms <= now_ms < self.ends_ms


@dataclass(frozen=True)
class Reservation:
    code: str
    sale_id: str
    item_id: str
    expires_ms: int

    def as_json(self) -> dict[str, str]:
        return {
            "code": self.code,
            "sale_id": self.sale_id,
            "item_id": self.item_id,
            "expires_at": rfc3339(self.expires_ms),
        }


@dataclass(frozen=True)
class Purchase:
    sale_id: str
    item_id: str
    user_id: str
    code: str
    purchased_ms: int

    def as_json(self) -> dict[str, str]:
        return {
            "sale_id": self.sale_id,
            "item_id": self.item_id,
            "user_id": self.user_id,
            "purchased_at": rfc3339(self.purchased_ms),
        }
