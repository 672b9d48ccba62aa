"""Who makes a request: the HTTP side of identity, the client address and the waiting room's
pass, gathered into a `Caller` for the service, which applies the contract's rules to it."""

from __future__ import annotations

import falcon

from flashsale.config import Settings
from flashsale.domain import Caller

PASS_HEADER = "X-Flashsale-Pass"  # noqa: S105 - a header name: the waiting room's pass


class Callers:
    """Reads the `Caller` of each request."""

    def __init__(self, settings: Settings):
        self._address_header = settings.client_ip_header
        self._addresses = settings.rate_per_ip > 0
        self._passes = settings.waiting_room

    def __call__(self, req: falcon.Request) -> Caller:
        return Caller(
            address=self._address(req),
            admission_pass=req.get_header(PASS_HEADER) if self._passes else None,
        )

    def _address(self, req: falcon.Request) -> str:
        """The client's address for the per-address limits; a proxy header only when trusted."""
        if not self._addresses:
            return ""
        if self._address_header:
            forwarded = req.get_header(self._address_header)
            if forwarded:
                # The right-most hop is the one our ingress appended: the only one we can trust.
                return forwarded.rsplit(",", 1)[-1].strip()
        return req.remote_addr or ""
