"""Builds the service's parts from settings: one place that knows how they fit together."""

from __future__ import annotations

from flashsale.config import Settings
from flashsale.sale.keeper import SaleKeeper
from flashsale.sale.service import SaleService
from flashsale.stores.inventory import Inventory, connect
from flashsale.stores.records import Database


def build_inventory(settings: Settings) -> Inventory:
    client = connect(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_timeout,
        cluster=settings.redis_cluster,
    )
    return Inventory(client)


def build_database(settings: Settings, pool_size: int | None = None) -> Database:
    return Database(
        settings.database_url,
        pool_size=pool_size or settings.pg_pool_size,
        connect_timeout=settings.pg_connect_timeout,
        statement_timeout_ms=settings.pg_statement_timeout_ms,
    )


def build_service(settings: Settings) -> SaleService:
    settings.require_stores()
    return SaleService(settings, build_inventory(settings), build_database(settings))


def build_keeper(settings: Settings) -> SaleKeeper:
    settings.require_stores()
    return SaleKeeper(settings, build_inventory(settings), build_database(settings, pool_size=2))
