"""Admission at the HTTP layer: counts each worker's requests in flight for load shedding (the
service decides where a refusal comes in the error table's order) and counts the shed ones by
route."""

from __future__ import annotations

import falcon

from flashsale.metrics import SHED
from flashsale.sale.load import Load

# Never counted, never shed: a kubelet or Prometheus must hear from a busy pod.
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


class Admission:
    """Falcon middleware: every request but the probes is in flight from the moment Falcon has
    it until its response is built."""

    def __init__(self, load: Load, routes: tuple[str, ...] = ()):
        self._load = load
        # The routes that can shed show 0 from the start: a rate() needs the series to exist.
        self._shed: dict[str, object] = {route: SHED.labels(route) for route in routes}

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.path in PROBES:
            return
        self._load.enter()
        req.context.in_flight = True

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        if not getattr(req.context, "in_flight", False):
            return
        self._load.leave()
        if resp.status_code == 503 and _error_code(resp) == "overloaded":
            route = req.uri_template or "unmatched"
            counter = self._shed.get(route)
            if counter is None:
                counter = self._shed[route] = SHED.labels(route)
            counter.inc()


def _error_code(resp: falcon.Response) -> str | None:
    media = resp.media
    try:
        return media["error"]["code"]
    except (TypeError, KeyError):
        return None
