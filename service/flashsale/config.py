"""The one place that reads configuration from the environment.

Every setting of every command is a field of `Settings`; nothing else in the package reads
`os.environ` (the gunicorn config, the dev runner and the Kubernetes commands included).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import MutableMapping
from dataclasses import dataclass

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

AUTH_MODES = ("off", "header", "jwt")
PASS_KEY_MIN = 16  # characters of FLASHSALE_PASS_KEY


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


def _switch(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name} must be on or off, got {raw!r}")


def _choice(env: dict[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower() or default
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _text(env: dict[str, str], name: str, default: str = "") -> str:
    return env.get(name, "").strip() or default


@dataclass(frozen=True)
class Settings:
    """Every knob of the service. Build it with `Settings.from_env()`; tests pass their own."""

    # --- stores
    redis_url: str = ""
    redis_cluster: bool = False
    redis_shards: int = 1
    redis_timeout: float = 2.0
    redis_max_connections: int = 256
    database_url: str = ""
    pg_pool_size: int = 20
    pg_connect_timeout: int = 3
    pg_statement_timeout_ms: int = 5000
    # --- the sale
    items: int = 10_000
    period: int = 3600
    user_limit: int = 10
    checkout_ttl: int = 120
    preload_seconds: int = 30
    # How old a purchase left pending (sold in Redis, not confirmed in PostgreSQL) must be before
    # the sweeper settles it: longer than any web request can still be writing it.
    pending_grace: float = 60.0
    sweep_interval: float = 1.0
    # --- abuse and identity
    rate_per_user: float = 50.0
    rate_per_ip: float = 0.0
    client_ip_header: str = ""
    auth: str = "off"
    auth_header: str = "X-User-Id"
    jwt_key: str = ""
    jwt_audience: str = ""
    jwt_issuer: str = ""
    # --- admission
    max_inflight: int = 50
    waiting_room: bool = False
    admit_rate: float = 100.0
    queue_opens_before: int = 300
    pass_key: str = ""
    pass_ttl: int = 600
    # --- HTTP
    host: str = ""  # empty: the command's default (`serve` all interfaces, `dev` 127.0.0.1)
    port: int = 8080
    probe_port: int = 0  # 0: the probes use `port`
    public_url: str = ""
    web_concurrency: int = 0
    header_timeout: float = 10.0
    max_conn_per_ip: int = 0
    # --- processes and logs
    sweeper: bool = True  # `serve` runs the pod's sweeper beside its workers
    log_level: str = "INFO"
    access_log: bool = True
    metrics_dir: str = ""  # PROMETHEUS_MULTIPROC_DIR: where gunicorn workers share metrics
    # --- `flashsale dev` and `flashsale kube`
    state_dir: str = ".flashsale"
    devservers: str = "auto"
    namespace: str = ""
    release: str = "flashsale"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        settings = cls(
            redis_url=env.get("REDIS_URL", ""),
            redis_cluster=_switch(env, "FLASHSALE_REDIS_CLUSTER", False),
            redis_shards=_int(env, "FLASHSALE_REDIS_SHARDS", 1, minimum=1),
            redis_timeout=_float(env, "FLASHSALE_REDIS_TIMEOUT", 2.0, minimum=0.01),
            redis_max_connections=_int(env, "FLASHSALE_REDIS_MAX_CONNECTIONS", 256, minimum=1),
            database_url=env.get("DATABASE_URL", ""),
            pg_pool_size=_int(env, "FLASHSALE_PG_POOL_SIZE", 20, minimum=1),
            pg_connect_timeout=_int(env, "FLASHSALE_PG_CONNECT_TIMEOUT", 3, minimum=1),
            pg_statement_timeout_ms=_int(env, "FLASHSALE_PG_STATEMENT_TIMEOUT_MS", 5000, minimum=1),
            items=_int(env, "FLASHSALE_ITEMS", 10_000, minimum=1),
            period=_int(env, "FLASHSALE_PERIOD", 3600, minimum=2),
            user_limit=_int(env, "FLASHSALE_USER_LIMIT", 10, minimum=1),
            checkout_ttl=_int(env, "FLASHSALE_CHECKOUT_TTL", 120, minimum=1),
            preload_seconds=_int(env, "FLASHSALE_PRELOAD_SECONDS", 30),
            pending_grace=_float(env, "FLASHSALE_PENDING_GRACE", 60.0, minimum=1.0),
            sweep_interval=_float(env, "FLASHSALE_SWEEP_INTERVAL", 1.0, minimum=0.05),
            rate_per_user=_float(env, "FLASHSALE_RATE_PER_USER", 50.0),
            rate_per_ip=_float(env, "FLASHSALE_RATE_PER_IP", 0.0),
            client_ip_header=_text(env, "FLASHSALE_CLIENT_IP_HEADER"),
            auth=_choice(env, "FLASHSALE_AUTH", "off", AUTH_MODES),
            auth_header=_text(env, "FLASHSALE_AUTH_HEADER", "X-User-Id"),
            jwt_key=env.get("FLASHSALE_JWT_KEY", "").strip(),
            jwt_audience=_text(env, "FLASHSALE_JWT_AUDIENCE"),
            jwt_issuer=_text(env, "FLASHSALE_JWT_ISSUER"),
            max_inflight=_int(env, "FLASHSALE_MAX_INFLIGHT", 50, minimum=1),
            waiting_room=_switch(env, "FLASHSALE_WAITING_ROOM", False),
            admit_rate=_float(env, "FLASHSALE_ADMIT_RATE", 100.0, minimum=0.001),
            queue_opens_before=_int(env, "FLASHSALE_QUEUE_OPENS_BEFORE", 300),
            pass_key=env.get("FLASHSALE_PASS_KEY", "").strip(),
            pass_ttl=_int(env, "FLASHSALE_PASS_TTL", 600, minimum=1),
            host=_text(env, "HOST"),
            port=_int(env, "PORT", 8080, minimum=0),
            probe_port=_int(env, "FLASHSALE_PROBE_PORT", 0),
            public_url=_text(env, "FLASHSALE_PUBLIC_URL").rstrip("/"),
            web_concurrency=_int(env, "WEB_CONCURRENCY", 0),
            header_timeout=_float(env, "FLASHSALE_HEADER_TIMEOUT", 10.0, minimum=0.1),
            max_conn_per_ip=_int(env, "FLASHSALE_MAX_CONN_PER_IP", 0),
            sweeper=_switch(env, "FLASHSALE_SWEEPER", True),
            log_level=_text(env, "LOG_LEVEL", "INFO").upper(),
            access_log=_switch(env, "FLASHSALE_ACCESS_LOG", True),
            metrics_dir=_text(env, "PROMETHEUS_MULTIPROC_DIR"),
            state_dir=_text(env, "FLASHSALE_STATE_DIR", ".flashsale"),
            devservers=_choice(env, "FLASHSALE_DEVSERVERS", "auto", ("auto", "system", "embedded")),
            namespace=_text(env, "FLASHSALE_NAMESPACE"),
            release=_text(env, "FLASHSALE_RELEASE", "flashsale"),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Settings that are each well formed but do not fit together."""
        if self.auth == "jwt" and not self.jwt_key:
            raise ConfigError("FLASHSALE_AUTH=jwt needs FLASHSALE_JWT_KEY")
        if self.auth == "header" and not self.auth_header:
            raise ConfigError("FLASHSALE_AUTH=header needs FLASHSALE_AUTH_HEADER")
        if self.waiting_room and len(self.pass_key) < PASS_KEY_MIN:
            raise ConfigError(
                f"FLASHSALE_WAITING_ROOM=on needs FLASHSALE_PASS_KEY, at least {PASS_KEY_MIN}"
                " characters and the same in every pod (e.g. `openssl rand -hex 32`)"
            )
        if self.probe_port and self.probe_port == self.port:
            raise ConfigError("FLASHSALE_PROBE_PORT must differ from PORT (or be 0)")
        if self.pending_grace <= self.redis_timeout:
            # The sweeper settles a purchase only once no request can still be deciding it.
            raise ConfigError("FLASHSALE_PENDING_GRACE must exceed FLASHSALE_REDIS_TIMEOUT")

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


def dev_pass_key(environ: MutableMapping[str, str]) -> None:
    """`flashsale dev` only: the waiting room on without FLASHSALE_PASS_KEY gets a random key for
    this run (one machine, so every process shares it; its passes end with the run)."""
    if (
        _switch(dict(environ), "FLASHSALE_WAITING_ROOM", False)
        and not environ.get("FLASHSALE_PASS_KEY", "").strip()
    ):
        environ["FLASHSALE_PASS_KEY"] = secrets.token_hex(32)
