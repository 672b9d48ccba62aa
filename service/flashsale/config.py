"""The one place that reads configuration from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

_TRUE = {"1", "true", "yes", "on"}


class ConfigError(ValueError):
    """A setting in the environment is malformed; raised at start-up, never mid-request."""


def _number(env: dict[str, str], name: str, default: float, minimum: float, kind: type) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(
            f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}"
        ) from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    return int(_number(env, name, default, minimum, int))


def _float(env: dict[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    return _number(env, name, default, minimum, float)


@dataclass(frozen=True)
class Settings:
    """Every knob of the service. Build it with `Settings.from_env()`; tests pass their own."""

    redis_url: str = ""
    redis_cluster: bool = False
    database_url: str = ""
    port: int = 8080
    items: int = 10_000
    period: int = 3600
    user_limit: int = 10
    checkout_ttl: int = 120
    rate_per_user: float = 50.0
    rate_per_ip: float = 0.0
    client_ip_header: str = ""
    web_concurrency: int = 0
    drain_interval: float = 1.0
    preload_seconds: int = 30
    log_level: str = "INFO"
    access_log: bool = True
    redis_max_connections: int = 256
    redis_timeout: float = 2.0
    pg_pool_size: int = 20
    pg_connect_timeout: int = 3
    pg_statement_timeout_ms: int = 5000
    # How old a purchase left pending (sold in Redis, not confirmed in PostgreSQL) must be before
    # the sweeper settles it: longer than any web request can still be writing it.
    pending_grace: float = 60.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        return cls(
            redis_url=env.get("REDIS_URL", ""),
            redis_cluster=env.get("FLASHSALE_REDIS_CLUSTER", "").strip().lower() in _TRUE,
            database_url=env.get("DATABASE_URL", ""),
            port=_int(env, "PORT", 8080, minimum=0),
            items=_int(env, "FLASHSALE_ITEMS", 10_000, minimum=1),
            period=_int(env, "FLASHSALE_PERIOD", 3600, minimum=2),
            user_limit=_int(env, "FLASHSALE_USER_LIMIT", 10, minimum=1),
            checkout_ttl=_int(env, "FLASHSALE_CHECKOUT_TTL", 120, minimum=1),
            rate_per_user=_float(env, "FLASHSALE_RATE_PER_USER", 50.0),
            rate_per_ip=_float(env, "FLASHSALE_RATE_PER_IP", 0.0),
            client_ip_header=env.get("FLASHSALE_CLIENT_IP_HEADER", "").strip(),
            web_concurrency=_int(env, "WEB_CONCURRENCY", 0),
            drain_interval=_float(env, "FLASHSALE_DRAIN_INTERVAL", 1.0, minimum=0.05),
            preload_seconds=_int(env, "FLASHSALE_PRELOAD_SECONDS", 30),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            access_log=env.get("FLASHSALE_ACCESS_LOG", "on").strip().lower() in _TRUE,
            redis_max_connections=_int(env, "FLASHSALE_REDIS_MAX_CONNECTIONS", 256, minimum=1),
            redis_timeout=_float(env, "FLASHSALE_REDIS_TIMEOUT", 2.0, minimum=0.01),
            pg_pool_size=_int(env, "FLASHSALE_PG_POOL_SIZE", 20, minimum=1),
            pg_connect_timeout=_int(env, "FLASHSALE_PG_CONNECT_TIMEOUT", 3, minimum=1),
            pg_statement_timeout_ms=_int(env, "FLASHSALE_PG_STATEMENT_TIMEOUT_MS", 5000, minimum=1),
            pending_grace=_float(env, "FLASHSALE_PENDING_GRACE", 60.0, minimum=1.0),
        )

    def require_stores(self) -> None:
        """Commands other than `dev` have no embedded default: say so plainly."""
        missing = [
            n
            for n, v in (("REDIS_URL", self.redis_url), ("DATABASE_URL", self.database_url))
            if not v
        ]
        if missing:
            raise ConfigError(
                f"{' and '.join(missing)} must be set (only `flashsale dev` starts its own)"
            )
