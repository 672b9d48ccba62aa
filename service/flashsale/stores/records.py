"""PostgreSQL, the system of record: a bounded connection pool and every SQL statement.

No request path writes SQL anywhere else (only the migrations and the dev servers' setup do).
Statements are parameterised, always.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg2
from psycopg2 import sql

from flashsale.domain import Purchase, Sale

# What a failing or absent database raises; callers turn it into 503 `unavailable`.
DatabaseError = psycopg2.Error


class Unreachable(psycopg2.OperationalError):
    """No connection could be had, so nothing was sent and nothing was written."""


class PoolExhausted(Unreachable):
    """Every connection stayed busy for the whole wait: the database is too slow or away."""


# Orders the purchase of a code against the sweeper's void of it (see settle_codes).
_LOCK_CODES = "SELECT pg_advisory_xact_lock(hashtextextended(c, 0)) FROM unnest(%s::text[]) c"
# Serialises the making of checkout_attempts partitions.
_PARTITION_LOCK = 0x666C617368 + 1


class LostBeforeCommit(psycopg2.OperationalError):
    """The connection failed before COMMIT was sent: the server rolls back a transaction whose
    connection is gone, so nothing was written."""


def surely_not_written(error: DatabaseError) -> bool:
    """Whether a failed transaction certainly did not commit: nothing was sent, the connection
    failed before COMMIT, or the server itself answered with an error (and rolled back). A
    connection lost during COMMIT leaves the outcome unknown: only PostgreSQL can tell later."""
    if isinstance(error, (Unreachable, LostBeforeCommit)):
        return True
    return getattr(error, "pgcode", None) is not None


def _ts(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


@dataclass(frozen=True)
class AttemptRow:
    attempt_key: str
    sale_id: str | None
    user_id: str | None
    item_id: str | None
    outcome: str
    code: str | None
    created_ms: int


class Database:
    """A bounded pool sized for the worker's greenlets, with connect and statement timeouts.

    Connections are opened lazily (a worker starts even while PostgreSQL is away) and kept for
    reuse. When one turns out dead, every idle one is dropped with it: they all died with the
    same server, and each would otherwise fail one more request after it came back.
    """

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 10,
        connect_timeout: int = 3,
        statement_timeout_ms: int = 5000,
    ):
        self._connect_args = {
            "dsn": dsn,
            "connect_timeout": connect_timeout,
            "options": f"-c statement_timeout={statement_timeout_ms}",
            "application_name": "flashsale",
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        self._idle: list[psycopg2.extensions.connection] = []
        self._slots = threading.BoundedSemaphore(pool_size)
        self._wait = connect_timeout + statement_timeout_ms / 1000

    @contextmanager
    def cursor(self) -> Iterator[psycopg2.extensions.cursor]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        if not self._slots.acquire(timeout=self._wait):
            raise PoolExhausted("no database connection became free in time")
        try:
            try:
                conn = self._idle.pop() if self._idle else psycopg2.connect(**self._connect_args)
            except psycopg2.OperationalError as error:
                raise Unreachable(str(error).strip()) from error
            broken = committing = False
            try:
                with conn, conn.cursor() as cur:
                    yield cur
                    committing = True
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
                broken = True
                if committing or getattr(error, "pgcode", None) is not None:
                    raise
                # A statement found the connection dead (and the rollback then "already
                # closed"): COMMIT was never sent.
                raise LostBeforeCommit(str(error).strip()) from error
            finally:
                if broken or conn.closed:
                    conn.close()
                    self.close()
                else:
                    self._idle.append(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close the idle connections (those in use close when they come back broken)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def ping(self) -> None:
        with self.cursor() as cur:
            cur.execute("SELECT 1")

    # --- sales and items ------------------------------------------------------------------

    def create_sale(self, sale: Sale, items: Iterable[tuple[str, int, str, str]]) -> Sale:
        """Insert the sale and its items in one transaction; if it exists, return what is stored.

        Two openers racing meet at the primary key: the loser waits for the winner's commit
        and then reads the winner's sale.
        """
        with self.cursor() as cur:
            # Copying a million items takes longer than any request may: this job may wait.
            cur.execute("SET LOCAL statement_timeout = '10min'")
            cur.execute(
                "INSERT INTO sales"
                " (sale_id, starts_at, ends_at, total_items, user_limit, seed, shards, shard_tags)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (sale_id) DO NOTHING",
                (
                    sale.sale_id,
                    _ts(sale.starts_ms),
                    _ts(sale.ends_ms),
                    sale.total_items,
                    sale.user_limit,
                    sale.seed,
                    sale.shards,
                    list(sale.shard_tags),
                ),
            )
            if cur.rowcount == 1:
                buffer = io.StringIO()
                for item_id, position, name, image_url in items:
                    buffer.write(f"{sale.sale_id}\t{item_id}\t{position}\t{name}\t{image_url}\n")
                buffer.seek(0)
                cur.copy_expert(
                    "COPY items (sale_id, item_id, position, name, image_url) FROM STDIN", buffer
                )
                return sale
        stored = self.get_sale(sale.sale_id)
        assert stored is not None  # the conflicting row is committed before we get here
        return stored

    _SALE_COLUMNS = "sale_id, starts_at, ends_at, total_items, user_limit, seed, shard_tags"

    @staticmethod
    def _sale(row: Sequence) -> Sale:
        return Sale(
            row[0],
            int(row[1].timestamp()),
            int(row[2].timestamp()),
            row[3],
            row[4],
            row[5],
            tuple(row[6]),
        )

    def get_sale(self, sale_id: str) -> Sale | None:
        with self.cursor() as cur:
            cur.execute(f"SELECT {self._SALE_COLUMNS} FROM sales WHERE sale_id = %s", (sale_id,))  # noqa: S608
            row = cur.fetchone()
        return None if row is None else self._sale(row)

    def latest_sale(self, at_ms: int) -> Sale | None:
        """The sale open at that instant, or else the one that ended most recently."""
        with self.cursor() as cur:
            cur.execute(
                f"SELECT {self._SALE_COLUMNS} FROM sales WHERE starts_at <= %s"  # noqa: S608
                " ORDER BY (ends_at > %s) DESC, ends_at DESC LIMIT 1",
                (_ts(at_ms), _ts(at_ms)),
            )
            row = cur.fetchone()
        return None if row is None else self._sale(row)

    def sales_to_close(self, at_ms: int) -> list[Sale]:
        with self.cursor() as cur:
            cur.execute(
                f"SELECT {self._SALE_COLUMNS} FROM sales"  # noqa: S608
                " WHERE ends_at <= %s AND closed_at IS NULL ORDER BY ends_at",
                (_ts(at_ms),),
            )
            return [self._sale(row) for row in cur.fetchall()]

    def close_sale(self, sale_id: str) -> int | None:
        """Record the final figures once; returns the number sold, or None if already closed."""
        with self.cursor() as cur:
            cur.execute(
                "UPDATE sales SET closed_at = now(),"
                " items_sold = (SELECT count(*) FROM purchases WHERE sale_id = %s)"
                " WHERE sale_id = %s AND closed_at IS NULL RETURNING items_sold",
                (sale_id, sale_id),
            )
            row = cur.fetchone()
        return None if row is None else row[0]

    # --- purchases ------------------------------------------------------------------------

    def save_purchase(self, purchase: Purchase) -> Purchase | None:
        """Insert unless the item is already sold; return what is stored for the item, or None
        when the sweeper voided the code (see `settle_codes`).

        A retry inserts nothing and gets the first row back; a different code in the answer
        means the item went to someone else. The per-code lock orders this INSERT against the
        sweeper's void of the same code: one of them wins, never both.
        """
        with self.cursor() as cur:
            cur.execute(_LOCK_CODES, ([purchase.code],))
            cur.execute(
                "INSERT INTO purchases (sale_id, item_id, user_id, code, purchased_at)"
                " SELECT %s, %s, %s, %s, %s"
                " WHERE NOT EXISTS (SELECT 1 FROM purchase_voids WHERE code = %s)"
                " ON CONFLICT DO NOTHING",
                (
                    purchase.sale_id,
                    purchase.item_id,
                    purchase.user_id,
                    purchase.code,
                    _ts(purchase.purchased_ms),
                    purchase.code,
                ),
            )
            if cur.rowcount == 1:
                return purchase
            cur.execute(
                "SELECT sale_id, item_id, user_id, code, purchased_at FROM purchases"
                " WHERE (sale_id = %s AND item_id = %s) OR code = %s",
                (purchase.sale_id, purchase.item_id, purchase.code),
            )
            row = cur.fetchone()
        return None if row is None else Purchase(row[0], row[1], row[2], row[3], _ms(row[4]))

    def purchase_by_code(self, code: str) -> Purchase | None:
        with self.cursor() as cur:
            cur.execute(
                "SELECT sale_id, item_id, user_id, code, purchased_at FROM purchases"
                " WHERE code = %s",
                (code,),
            )
            row = cur.fetchone()
        return None if row is None else Purchase(row[0], row[1], row[2], row[3], _ms(row[4]))

    def purchases_of(self, sale_id: str) -> list[Purchase]:
        with self.cursor() as cur:
            cur.execute(
                "SELECT sale_id, item_id, user_id, code, purchased_at FROM purchases"
                " WHERE sale_id = %s",
                (sale_id,),
            )
            return [Purchase(r[0], r[1], r[2], r[3], _ms(r[4])) for r in cur.fetchall()]

    def settle_codes(self, sale_id: str, codes: Sequence[str]) -> tuple[set[str], set[str]]:
        """Decide purchases left pending in Redis: (confirmed, voided). A code PostgreSQL holds
        is confirmed; any other is voided, so that no purchase of it can commit afterwards
        (save_purchase takes the same per-code lock and checks the voids)."""
        with self.cursor() as cur:
            cur.execute(_LOCK_CODES, (sorted(codes),))
            cur.execute("SELECT code FROM purchases WHERE code = ANY(%s)", (list(codes),))
            confirmed = {row[0] for row in cur.fetchall()}
            voided = sorted(set(codes) - confirmed)
            cur.execute(
                "INSERT INTO purchase_voids (code, sale_id) SELECT c, %s FROM unnest(%s::text[]) c"
                " ON CONFLICT DO NOTHING",
                (sale_id, voided),
            )
        return confirmed, set(voided)

    # --- checkout attempts ----------------------------------------------------------------

    def insert_attempts(self, rows: Sequence[AttemptRow]) -> list[str]:
        """Insert a drained batch in one statement (a column per array, so psycopg2 quotes in
        C). A row already present is skipped by its key: a re-drain, or the pod that answered
        the request `unavailable` wrote it first. Returns the codes of the batch's `ok` rows
        that such a pod's row superseded: reservations nobody was told of."""
        if not rows:
            return []
        with self.cursor() as cur:
            cur.execute(
                "INSERT INTO checkout_attempts"
                " (attempt_key, sale_id, user_id, item_id, outcome, code, created_at)"
                " SELECT k, s, u, i, o, c, to_timestamp(t / 1000.0)"
                " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
                " %s::text[], %s::bigint[]) AS batch (k, s, u, i, o, c, t)"
                " ON CONFLICT (attempt_key, created_at) DO NOTHING RETURNING attempt_key",
                (
                    [r.attempt_key for r in rows],
                    [r.sale_id for r in rows],
                    [r.user_id for r in rows],
                    [r.item_id for r in rows],
                    [r.outcome for r in rows],
                    [r.code for r in rows],
                    [r.created_ms for r in rows],
                ),
            )
            inserted = {row[0] for row in cur.fetchall()}
            skipped_ok = {r.attempt_key: r.code for r in rows if r.attempt_key not in inserted}
            skipped_ok = {k: c for k, c in skipped_ok.items() if c}
            if not skipped_ok:
                return []
            # A statement of its own: it sees a row another writer committed meanwhile.
            cur.execute(
                "SELECT attempt_key FROM checkout_attempts"
                " WHERE attempt_key = ANY(%s) AND outcome = 'unavailable'",
                (list(skipped_ok),),
            )
            return [skipped_ok[row[0]] for row in cur.fetchall()]

    def insert_attempt(self, row: AttemptRow) -> str | None:
        """Write one attempt straight into PostgreSQL (Redis did not answer in time), with the
        outcome the client is answered. If the outbox's row of the same request got here
        first, it is overwritten; returns its code when it said `ok`: a reservation Redis made
        but nobody was told of."""
        values = (
            row.attempt_key,
            row.sale_id,
            row.user_id,
            row.item_id,
            row.outcome,
            row.code,
            _ts(row.created_ms),
        )
        with self.cursor() as cur:
            cur.execute(
                "INSERT INTO checkout_attempts"
                " (attempt_key, sale_id, user_id, item_id, outcome, code, created_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (attempt_key, created_at) DO NOTHING",
                values,
            )
            if cur.rowcount == 1:
                return None
            cur.execute(
                "UPDATE checkout_attempts a SET outcome = %s, code = %s FROM ("
                "  SELECT attempt_key, created_at, outcome, code FROM checkout_attempts"
                "  WHERE attempt_key = %s AND created_at = %s FOR UPDATE) old"
                " WHERE a.attempt_key = old.attempt_key AND a.created_at = old.created_at"
                " RETURNING old.outcome, old.code",
                (row.outcome, row.code, row.attempt_key, _ts(row.created_ms)),
            )
            old = cur.fetchone()
        return old[1] if old and old[0] == "ok" else None

    def ensure_attempt_partitions(self, first: date, days: int) -> list[str]:
        """Make the day partitions of checkout_attempts from `first` on, `days` of them, unless
        they exist; rows the default partition caught for such a day move into it. Returns the
        partitions made."""
        made = []
        with self.cursor() as cur:
            cur.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'checkout_attempts'::regclass"
            )
            existing = {row[0] for row in cur.fetchall()}
        for offset in range(days):
            day = first + timedelta(days=offset)
            name = f"checkout_attempts_{day:%Y%m%d}"
            if name in existing:
                continue
            low = datetime(day.year, day.month, day.day, tzinfo=UTC)
            high = low + timedelta(days=1)
            with self.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
                cur.execute("SELECT to_regclass(%s)", (name,))
                if cur.fetchone()[0] is not None:
                    continue  # another process made it while we waited
                cur.execute(
                    sql.SQL(
                        "CREATE TABLE {0} (LIKE checkout_attempts INCLUDING DEFAULTS);"
                        " WITH moved AS (DELETE FROM checkout_attempts_default"
                        "   WHERE created_at >= %(low)s AND created_at < %(high)s RETURNING *)"
                        " INSERT INTO {0} SELECT * FROM moved;"
                        " ALTER TABLE checkout_attempts ATTACH PARTITION {0}"
                        "   FOR VALUES FROM (%(low)s) TO (%(high)s)"
                    ).format(sql.Identifier(name)),
                    {"low": low, "high": high},
                )
            made.append(name)
        return made

    def prune_attempts(self, before: date) -> list[str]:
        """Drop the day partitions of checkout_attempts that end on or before `before` (and the
        default partition's rows older than it). Never a purchase, never a sale's row."""
        dropped = []
        with self.cursor() as cur:
            cur.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'checkout_attempts'::regclass"
                " AND c.relname ~ '^checkout_attempts_[0-9]{8}$' ORDER BY c.relname"
            )
            names = [row[0] for row in cur.fetchall()]
        cutoff = before.strftime("%Y%m%d")
        for name in names:
            if name.removeprefix("checkout_attempts_") >= cutoff:
                continue
            with self.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "ALTER TABLE checkout_attempts DETACH PARTITION {0}; DROP TABLE {0}"
                    ).format(sql.Identifier(name))
                )
            dropped.append(name)
        with self.cursor() as cur:
            cur.execute(
                "DELETE FROM checkout_attempts_default WHERE created_at < %s",
                (datetime(before.year, before.month, before.day, tzinfo=UTC),),
            )
        return dropped

    def issued_claims(self, sale_id: str) -> dict[str, tuple[str, str]]:
        """code -> (item_id, user_id) of every successful checkout of the sale drained so far."""
        with self.cursor() as cur:
            cur.execute(
                "SELECT DISTINCT code, item_id, user_id FROM checkout_attempts"
                " WHERE sale_id = %s AND outcome = 'ok' AND code IS NOT NULL",
                (sale_id,),
            )
            return {code: (item, user) for code, item, user in cur.fetchall()}

    def code_holder(self, code: str) -> str | None:
        """The user a checkout issued this code to; None if no checkout did."""
        with self.cursor() as cur:
            cur.execute(
                "SELECT user_id FROM checkout_attempts WHERE code = %s AND outcome = 'ok' LIMIT 1",
                (code,),
            )
            row = cur.fetchone()
        return None if row is None else row[0]
