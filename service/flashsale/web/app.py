"""The Falcon application factory: routes, error handling, JSON, request timing."""

from __future__ import annotations

import time

import falcon
import falcon.media
import orjson

from flashsale.domain import SaleError
from flashsale.engine import SaleService
from flashsale.metrics import REQUEST_DURATION, SaleCollector, render
from flashsale.outbox import backlog
from flashsale.web import resources
from flashsale.web.errors import handle_sale_error, handle_unexpected, serialize_http_error


class RequestTiming:
    """Observes every request's latency by route template and status."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, int], object] = {}

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        key = (req.uri_template or "unmatched", resp.status_code)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = REQUEST_DURATION.labels(*key)
        child.observe(time.perf_counter() - req.context.started)


def create_app(service: SaleService) -> falcon.App:
    app = falcon.App(middleware=[RequestTiming()])
    json = falcon.media.JSONHandler(dumps=orjson.dumps, loads=orjson.loads)
    app.req_options.media_handlers[falcon.MEDIA_JSON] = json
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = json

    settings = service.settings
    client_address = resources.ClientAddress(settings.client_ip_header, settings.rate_per_ip > 0)
    collector = SaleCollector(service.snapshot, lambda: backlog(service.inventory))

    app.add_route("/checkout", resources.Checkout(service, client_address))
    app.add_route("/purchase", resources.Purchase(service, client_address))
    app.add_route("/sale/status", resources.SaleStatus(service))
    app.add_route("/sale/items", resources.SaleItems(service))
    app.add_route("/images/{sale_id}/{item_id}.svg", resources.ItemImage(service))
    app.add_route("/healthz", resources.Health())
    app.add_route("/readyz", resources.Ready(service))
    app.add_route("/metrics", resources.Metrics(lambda: render(collector)))
    app.add_route("/openapi.json", resources.OpenAPI())

    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(SaleError, handle_sale_error)
    app.set_error_serializer(serialize_http_error)
    return app
