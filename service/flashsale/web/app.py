"""The Falcon application factory: routes, errors, JSON, request timing, the access log."""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from pathlib import Path

import falcon
import falcon.media
import orjson

from flashsale.domain import SaleError, rfc3339
from flashsale.metrics import REQUEST_DURATION, SaleCollector, render
from flashsale.sale.service import SaleService
from flashsale.web import resources
from flashsale.web.admission import Admission
from flashsale.web.callers import Callers
from flashsale.web.errors import (
    error_code,
    handle_sale_error,
    handle_unexpected,
    serialize_http_error,
)

STATIC_DIR = Path(__file__).with_name("static")
# The routes whose requests the service may shed (it checks the load before their store calls).
SHED_ROUTES = (
    "/checkout",
    "/purchase",
    "/sale/status",
    "/sale/items",
    "/sale/stock",
    "/images/{sale_id}/{item_id}.svg",
    "/queue",
)
# An incoming X-Request-ID (from an ingress or a client) is kept only when it is short and tame.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class _RequestIds:
    """Request ids without a syscall per request: a random per-process prefix and a counter.
    The prefix is drawn again in each forked worker, so ids never repeat across workers."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = os.urandom(6).hex() + "-"
        self._counter = itertools.count(1)

    def next(self) -> str:
        return self._prefix + format(next(self._counter), "x")


class RequestTiming:
    """Observes every request's latency by route template and status, and writes one JSON access
    line per request (request id, method, route, status, latency, outcome).

    It runs on every request, so it is kept cheap: the histogram child is cached per (route,
    status); the line is built as one dict, serialized by orjson and written with a single
    `write(2)` (atomic for a line this short, so workers never interleave), without the logging
    machinery. Lines of answers below 500 and of shed requests (503 `overloaded`) are `info`, other
    5xx are `error`, both filtered by the level.
    """

    def __init__(self, access_log: bool = True, level: str = "INFO") -> None:
        self._children: dict[tuple[str, int], object] = {}
        threshold = logging.getLevelName(level.upper())
        threshold = threshold if isinstance(threshold, int) else logging.INFO
        self._log_info = access_log and threshold <= logging.INFO
        self._log_errors = access_log and threshold <= logging.ERROR
        self._ids = _RequestIds()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()
        if self._log_errors:
            given = req.get_header("X-Request-ID")
            request_id = given if given and _REQUEST_ID.fullmatch(given) else self._ids.next()
            req.context.request_id = request_id
            resp.set_header("X-Request-ID", request_id)

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        elapsed = time.perf_counter() - req.context.started
        status = resp.status_code
        route = req.uri_template or _unrouted(req.path)
        key = (route, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = REQUEST_DURATION.labels(*key)
        child.observe(elapsed)
        if (status < 500 and not self._log_info) or not self._log_errors:
            return
        outcome = "ok"
        if status >= 400:
            code = error_code(resp)
            outcome = "error" if code is None else code
        # A shed request is a decision, as a 429 is, not a failure: under a crowd there are
        # thousands a second, and they are counted by flashsale_shed_total.
        severe = status >= 500 and outcome != "overloaded"
        if not severe and not self._log_info:
            return
        line = orjson.dumps(
            {
                "time": rfc3339(int(time.time() * 1000)),
                "level": "error" if severe else "info",
                "logger": "flashsale.access",
                "message": "request",
                "request_id": req.context.request_id,
                "method": req.method,
                "route": route,
                "status": status,
                "latency_ms": round(elapsed * 1000, 3),
                "outcome": outcome,
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        os.write(2, line)


def _unrouted(path: str) -> str:
    """A bounded label for requests no route template matched (the status page, static files,
    unknown paths): never the raw path, which a client could vary without end."""
    if path == "/":
        return "/"
    if path.startswith("/static/"):
        return "/static/{file}"
    return "unmatched"


class StatusPage:
    """`GET /`: the status page (static HTML that polls the JSON endpoints). Served as a sink
    matching exactly "/", so it stays out of the JSON API and its OpenAPI document."""

    def __init__(self) -> None:
        self._html = (STATIC_DIR / "index.html").read_bytes()

    def __call__(self, req: falcon.Request, resp: falcon.Response, **kwargs: str) -> None:
        if req.method not in ("GET", "HEAD"):
            raise falcon.HTTPMethodNotAllowed(["GET", "HEAD"])
        resp.content_type = falcon.MEDIA_HTML
        resp.cache_control = ["no-cache"]
        resp.data = self._html


def _answer_head(resource: object) -> None:
    """HEAD on every GET route: the GET responder runs, and Falcon sends its status and headers
    (Content-Length included) without the body."""
    on_get = getattr(resource, "on_get", None)
    if on_get is not None and not hasattr(resource, "on_head"):
        resource.on_head = on_get  # type: ignore[attr-defined]


def create_app(service: SaleService) -> falcon.App:
    """The WSGI app of one worker: every route, the error shape, timing and the access log."""
    settings = service.settings
    timing = RequestTiming(settings.access_log, settings.log_level)
    admission = Admission(service.load, SHED_ROUTES)
    app = falcon.App(middleware=[timing, admission])
    json = falcon.media.JSONHandler(dumps=orjson.dumps, loads=orjson.loads)
    app.req_options.media_handlers[falcon.MEDIA_JSON] = json
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = json

    callers = Callers(settings)
    routes = {
        "/checkout": resources.Checkout(service, callers),
        "/purchase": resources.Purchase(service, callers),
        "/sale/status": resources.SaleStatus(service, callers),
        "/sale/items": resources.SaleItems(service, callers),
        "/sale/stock": resources.SaleStock(service, callers),
        "/sale/history": resources.SaleHistory(service, callers),
        "/images/{sale_id}/{item_id}.svg": resources.ItemImage(service, callers),
        **_probe_routes(service),
        "/openapi.json": resources.OpenAPI(settings),
    }
    if settings.waiting_room:
        routes["/queue"] = resources.QueueJoin(service, callers)
        routes["/queue/{ticket}"] = resources.QueueLook(service, callers)
    for template, resource in routes.items():
        _answer_head(resource)
        app.add_route(template, resource)
    # These two answer HEAD themselves: StatusPage, and Falcon's static route (any method).
    app.add_sink(StatusPage(), re.compile(r"/\Z"))
    app.add_static_route("/static", str(STATIC_DIR))

    _answer_errors(app)
    return app


def create_probe_app(service: SaleService) -> falcon.App:
    """The WSGI app of the probe port (server/probes.py): the probes and /metrics only."""
    app = falcon.App()
    for template, resource in _probe_routes(service).items():
        _answer_head(resource)
        app.add_route(template, resource)
    _answer_errors(app)
    return app


def _probe_routes(service: SaleService) -> dict[str, object]:
    """The kubelet's probes and Prometheus' scrape: never shed (web/admission.py)."""
    settings = service.settings
    collector = SaleCollector(
        service.snapshot,
        service.backlog,
        clock=service.clock,
        period=settings.period,
        queue_length=service.queue_length if settings.waiting_room else None,
    )
    return {
        "/healthz": resources.Health(),
        "/readyz": resources.Ready(service),
        "/metrics": resources.Metrics(lambda: render(collector, settings.metrics_dir)),
    }


def _answer_errors(app: falcon.App) -> None:
    """Every error in the API's shape (web/errors.py)."""
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(SaleError, handle_sale_error)
    app.set_error_serializer(serialize_http_error)
