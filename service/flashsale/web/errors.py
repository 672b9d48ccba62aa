"""One shape for every error: {"error": {"code", "message"}}, with the status of its row in the
error table (docs/api.md#errors)."""

from __future__ import annotations

import logging
from typing import Any

import falcon

from flashsale.domain import SaleError

log = logging.getLogger(__name__)

# Falcon's own errors (unknown route, wrong method, oversized request...) in the same shape.
_HTTP_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_code(resp: falcon.Response) -> str | None:
    """The code of an answer in the error shape, else None: read back by the access log and the
    shed counts, which see the response only."""
    try:
        return resp.media["error"]["code"]
    except (TypeError, KeyError):
        return None


def handle_sale_error(
    req: falcon.Request, resp: falcon.Response, error: SaleError, params: dict
) -> None:
    resp.status = error.status
    # A resource may have set another type (an image) before the error: errors are JSON.
    resp.content_type = falcon.MEDIA_JSON
    resp.media = error_body(error.code, error.message)
    retry_after = error.retry_after or (1 if error.code == "unavailable" else None)
    if retry_after:
        resp.set_header("Retry-After", str(retry_after))
    challenge = getattr(req.context, "challenge", None)  # FLASHSALE_AUTH=jwt (web.callers)
    if challenge and error.code == "unauthenticated":
        resp.set_header("WWW-Authenticate", challenge)


def serialize_http_error(
    req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError
) -> None:
    code = _HTTP_CODES.get(error.status_code, "http_error")
    message = error.description or error.title or "The request could not be served."
    resp.content_type = falcon.MEDIA_JSON
    resp.media = error_body(code, message)


def handle_unexpected(
    req: falcon.Request, resp: falcon.Response, error: Exception, params: dict
) -> None:
    """A bug, not a decision: log it with its trace and answer in the API's error shape."""
    log.exception("unhandled error on %s %s", req.method, req.path)
    resp.status = 500
    resp.content_type = falcon.MEDIA_JSON
    resp.media = error_body("internal_error", "Something went wrong on our side.")
