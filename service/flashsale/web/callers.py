"""Who makes a request: the HTTP side of identity, the client address and the waiting room's
pass, gathered into a `Caller` for the service, which applies the API's rules to it."""

from __future__ import annotations

import falcon

from flashsale.config import Settings
from flashsale.domain import Caller
from flashsale.web.identity import identity_reader

PASS_HEADER = "X-Flashsale-Pass"  # noqa: S105 - a header name: the waiting room's pass


class Callers:
    """Reads the `Caller` of each request."""

    def __init__(self, settings: Settings):
        self._address_header = settings.client_ip_header
        self._addresses = settings.rate_per_ip > 0
        self._passes = settings.waiting_room
        self._identity = identity_reader(settings)

    def __call__(self, req: falcon.Request, identify: bool = True) -> Caller:
        """`identify=False` for the reads, which need no identity (and spend no verification)."""
        address = self._address(req)
        admission_pass = req.get_header(PASS_HEADER) if self._passes else None
        if not identify or self._identity is None:
            return Caller(address=address, admission_pass=admission_pass)
        identity = self._identity(req)
        if identity.user is None:
            # The 401 answer carries it (web.errors), should the service refuse this request.
            req.context.challenge = identity.challenge
            return Caller(address=address, unauthenticated=True, admission_pass=admission_pass)
        return Caller(address=address, user=identity.user, admission_pass=admission_pass)

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
