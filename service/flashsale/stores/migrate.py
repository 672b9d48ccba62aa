"""Applies the plain SQL files in migrations/ once each, in name order, and records what ran."""

from __future__ import annotations

from importlib import resources

import psycopg2

# Any constant works: it only has to be the same for every migrator of this schema.
_LOCK = 0x666C617368  # "flash"


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) of every migration shipped with the package, in order."""
    folder = resources.files("flashsale") / "migrations"
    files = sorted(f for f in folder.iterdir() if f.name.endswith(".sql"))
    return [(f.name, f.read_text()) for f in files]


def migrate(dsn: str) -> list[str]:
    """Apply what has not run yet; returns the names applied. Safe to run concurrently."""
    applied: list[str] = []
    conn = psycopg2.connect(dsn, connect_timeout=10, application_name="flashsale-migrate")
    try:
        with conn, conn.cursor() as cur:
            # A session lock: a second migrator waits here, then finds nothing left to do.
            cur.execute("SELECT pg_advisory_lock(%s)", (_LOCK,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
        for name, sql in migration_files():
            with conn, conn.cursor() as cur:
                cur.execute("SELECT 1 FROM schema_migrations WHERE name = %s", (name,))
                if cur.fetchone():
                    continue
                cur.execute(sql)
                cur.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
                applied.append(name)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))
    finally:
        conn.close()
    return applied
