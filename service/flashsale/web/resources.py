"""Resources: each sale resource reads the request, calls the sale service once, and writes the
answer; the health, metrics and OpenAPI ones answer from what they are given."""

from __future__ import annotations

from typing import Any

import falcon
from prometheus_client import CONTENT_TYPE_LATEST

from flashsale.config import Settings
from flashsale.domain import SaleError, parse_count
from flashsale.sale.service import SaleService
from flashsale.web.callers import Callers
from flashsale.web.openapi import document


def _param(req: falcon.Request, name: str) -> Any:
    """The raw value: None when absent, a list when repeated (the service rejects both)."""
    return req.params.get(name)


class _SaleResource:
    """What every sale resource is given: the service it calls and who makes each request."""

    def __init__(self, service: SaleService, callers: Callers):
        self._service = service
        self._callers = callers


class Checkout(_SaleResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        reservation = self._service.checkout(
            _param(req, "user_id"), _param(req, "id"), self._callers(req)
        )
        resp.media = reservation.as_json()


class Purchase(_SaleResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        purchase = self._service.purchase(_param(req, "code"), self._callers(req))
        resp.media = purchase.as_json()


class QueueJoin(_SaleResource):
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        ticket = self._service.join_queue(_param(req, "user_id"), self._callers(req))
        resp.media = ticket.as_json()


class QueueLook(_SaleResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response, ticket: str) -> None:
        found = self._service.queue_ticket(ticket, self._callers(req, identify=False))
        if found is None:
            raise falcon.HTTPNotFound(description="That queue ticket is unknown.")
        resp.cache_control = ["no-store"]
        resp.media = found.as_json()


class SaleStatus(_SaleResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._service.status(self._callers(req, identify=False))


def _page_params(req: falcon.Request) -> tuple[int, str | None]:
    """`limit` (1..1000, default 100) and `cursor` of a paged read (the items, their stock)."""
    raw_limit = _param(req, "limit")
    limit = 100 if raw_limit is None else parse_count(raw_limit)
    if limit is None or not 1 <= limit <= 1000:
        raise SaleError("invalid_request", "`limit` must be an integer from 1 to 1000")
    cursor = _param(req, "cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise SaleError("invalid_request", "`cursor` may be given once")
    return limit, cursor or None


class SaleItems(_SaleResource):
    def __init__(self, service: SaleService, callers: Callers):
        super().__init__(service, callers)
        # FLASHSALE_PUBLIC_URL, else each request's own scheme and host.
        self._public_url = service.settings.public_url

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit, cursor = _page_params(req)
        page = self._service.items_page(limit, cursor, self._callers(req, identify=False))
        base = self._public_url or req.prefix
        for item in page["items"]:
            item["image_url"] = base + item["image_url"]
        resp.media = page


class SaleStock(_SaleResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit, cursor = _page_params(req)
        resp.media = self._service.stock(limit, cursor, self._callers(req, identify=False))


class SaleHistory(_SaleResource):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._service.history(self._callers(req, identify=False))
        resp.cache_control = ["public", "max-age=1"]


class ItemImage(_SaleResource):
    def on_get(
        self, req: falcon.Request, resp: falcon.Response, sale_id: str, item_id: str
    ) -> None:
        resp.content_type = "image/svg+xml"
        resp.text = self._service.item_image(sale_id, item_id, self._callers(req, identify=False))
        resp.cache_control = ["public", "max-age=86400", "immutable"]


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


class Ready:
    def __init__(self, service: SaleService):
        self._service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks = self._service.ready()
        down = [name for name, ok in checks.items() if not ok]
        if down:
            raise SaleError("unavailable", f"not ready: {', '.join(down)} unreachable")
        resp.media = {"status": "ready", "checks": checks}


class Metrics:
    def __init__(self, render: Any):
        self._render = render

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = self._render()


class OpenAPI:
    def __init__(self, settings: Settings) -> None:
        self._document = document(settings.auth, settings.auth_header, settings.waiting_room)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self._document
