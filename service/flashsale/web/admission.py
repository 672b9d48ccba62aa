"""Admission at the HTTP layer: counts each worker's requests in flight for load shedding (the
service decides where a refusal comes in the error table's order) and counts the shed ones by
route."""

from __future__ import annotations

import falcon

from flashsale.metrics import SHED
from flashsale.sale.load import Load
from flashsale.web.errors import error_code

# Never counted, never shed: a kubelet or Prometheus must hear from a busy pod.
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


class Admission:
    """Falcon middleware: every request but the probes is in flight from the moment Falcon has
    it until its response is built, or until `Load.check()` sheds it (it leaves the count
    there)."""

    def __init__(self, load: Load, routes: tuple[str, ...] = ()):
        self._load = load
        # The routes that can shed show 0 from the start: a rate() needs the series to exist.
        self._shed: dict[str, object] = {route: SHED.labels(route) for route in routes}

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.path not in PROBES:
            self._load.enter()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        self._load.leave()  # a no-op for a request not counted (a probe, a shed one)
        if resp.status_code == 503 and error_code(resp) == "overloaded":
            route = req.uri_template or "unmatched"
            counter = self._shed.get(route)
            if counter is None:
                counter = self._shed[route] = SHED.labels(route)
            counter.inc()
