"""The OpenAPI 3 document of the API. A test keeps it in step with the routes and error codes."""

from __future__ import annotations

from typing import Any

from flashsale.domain import ERRORS
from flashsale.web.callers import PASS_HEADER

_TOKEN = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}
_TIMESTAMP = {"type": "string", "format": "date-time"}
# What every answer about a sale starts with (GET /sale/status, GET /sale/history).
_SALE_FIELDS = {
    "sale_id": {"type": "string"},
    "starts_at": _TIMESTAMP,
    "ends_at": _TIMESTAMP,
    "total_items": {"type": "integer"},
}


# The API promises Retry-After with 429 and 503; the error handler sends it with both.
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}


# Statuses the HTTP layer answers before the API sees a request, on any operation: gunicorn's
# refusals of a request line (414) or headers (431) past its limits, of bytes that are not HTTP
# (400), of an `Expect` other than 100-continue (417) and of a transfer coding it does not know
# (501), in the error shape (server/gunicorn_conf.py).
_HTTP_LAYER_STATUSES = ("400", "414", "417", "431", "501")


def _error(*codes: str, status: str = "") -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": " / ".join(codes),
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if status in ("429", "503"):
        response["headers"] = _RETRY_AFTER
    return response


def _ok(schema: str) -> dict[str, Any]:
    return {
        "description": "OK",
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _query(name: str, schema: dict[str, Any], required: bool, text: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": text,
    }


def _page(fields: dict[str, Any]) -> dict[str, Any]:
    """A page of a paged read (the items, their stock): its items have these fields, all
    required, and the cursor of the next page is null on the last."""
    return {
        "type": "object",
        "required": ["sale_id", "items", "next_cursor"],
        "properties": {
            "sale_id": {"type": "string"},
            "items": {
                "type": "array",
                "items": {"type": "object", "required": list(fields), "properties": fields},
            },
            "next_cursor": {"type": "string", "nullable": True},
        },
    }


def _by_status(*codes: str) -> dict[str, dict[str, Any]]:
    """Group error codes by their HTTP status, as the responses object wants them."""
    grouped: dict[str, list[str]] = {}
    for code in codes:
        grouped.setdefault(str(ERRORS[code][0]), []).append(code)
    return {status: _error(*names, status=status) for status, names in grouped.items()}


# The error codes each operation can answer, in the error table's precedence order.
CHECKOUT_ERRORS = (
    "invalid_request",
    "unauthenticated",
    "forbidden",
    "not_admitted",
    "overloaded",
    "rate_limited",
    "no_active_sale",
    "item_not_found",
    "sold_out",
    "user_limit_reached",
    "item_unavailable",
    "unavailable",
)
PURCHASE_ERRORS = (
    "invalid_request",
    "unauthenticated",
    "forbidden",
    "overloaded",
    "rate_limited",
    "code_not_found",
    "code_expired",
    "unavailable",
)
PAGE_ERRORS = (  # GET /sale/items and /sale/stock
    "invalid_request",
    "overloaded",
    "rate_limited",
    "no_active_sale",
    "unavailable",
)


QUEUE_JOIN_ERRORS = (
    "invalid_request",
    "unauthenticated",
    "forbidden",
    "overloaded",
    "rate_limited",
    "no_active_sale",
    "unavailable",
)

_PASS_HEADER = {
    "name": PASS_HEADER,
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "the pass `GET /queue/{ticket}` gave this user for this sale; without a"
    " valid one a checkout is `403 not_admitted`",
}


def _waiting_room() -> tuple[dict[str, Any], dict[str, Any]]:
    """The paths and the schema of the waiting room (FLASHSALE_WAITING_ROOM=on)."""
    paths = {
        "/queue": {
            "post": {
                "summary": "Join the queue of the current sale, or of the next one shortly"
                " before it opens; joining again gives the same ticket",
                "operationId": "joinQueue",
                "parameters": [_query("user_id", _TOKEN, True, "who joins")],
                "responses": {"200": _ok("QueueTicket"), **_by_status(*QUEUE_JOIN_ERRORS)},
            }
        },
        "/queue/{ticket}": {
            "get": {
                "summary": "Where a ticket stands; once admitted, the pass checkout asks for",
                "operationId": "queueTicket",
                "parameters": [
                    {
                        "name": "ticket",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "the ticket `POST /queue` returned",
                    }
                ],
                "responses": {
                    "200": _ok("QueueTicket"),
                    "404": _error("not_found"),
                    **_by_status("rate_limited", "unavailable"),
                },
            }
        },
    }
    schema = {
        "type": "object",
        "required": ["ticket", "sale_id", "position", "admitted", "retry_after"],
        "properties": {
            "ticket": {"type": "string"},
            "sale_id": {"type": "string"},
            "position": {
                "type": "integer",
                "minimum": 0,
                "nullable": True,
                "description": "null until the sale opens and the order is drawn; then how many"
                " not yet admitted are ahead, plus one; 0 once admitted. Only decreases.",
            },
            "admitted": {"type": "boolean"},
            "retry_after": {
                "type": "integer",
                "minimum": 0,
                "description": "seconds until asking again is worth it (0 once admitted)",
            },
            "pass": {"type": "string", "description": "once admitted: for X-Flashsale-Pass"},
            "pass_expires_at": _TIMESTAMP,
        },
    }
    return paths, schema


_PAGE_PARAMETERS = [
    _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": 1000},
        False,
        "page size (default 100)",
    ),
    _query("cursor", {"type": "string"}, False, "next_cursor of the last page"),
]


def _board() -> tuple[dict[str, Any], dict[str, Any]]:
    """The paths and schemas of the status page's reads: item states and the burn-down."""
    paths = {
        "/sale/stock": {
            "get": {
                "summary": "The state of each item of a page of /sale/items (same limit, cursor"
                " and order): available, reserved or sold, now",
                "operationId": "saleStock",
                "parameters": _PAGE_PARAMETERS,
                "responses": {
                    "200": _ok("StockPage"),
                    **_by_status(*PAGE_ERRORS),
                },
            }
        },
        "/sale/history": {
            "get": {
                "summary": "The current sale's sold count since it opened, by time bucket",
                "operationId": "saleHistory",
                "responses": {
                    "200": {
                        **_ok("SaleHistory"),
                        "headers": {
                            "Cache-Control": {
                                "description": "public, max-age=1: the same answer for a second",
                                "schema": {"type": "string"},
                            }
                        },
                    },
                    **_by_status("rate_limited", "no_active_sale", "unavailable"),
                },
            }
        },
    }
    schemas = {
        "StockPage": _page(
            {
                "id": {"type": "string"},
                "state": {"type": "string", "enum": ["available", "reserved", "sold"]},
            }
        ),
        "SaleHistory": {
            "type": "object",
            "required": [*_SALE_FIELDS, "bucket_seconds", "sold"],
            "properties": {
                **_SALE_FIELDS,
                "bucket_seconds": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "the sale's period / 360, rounded up to whole seconds",
                },
                "sold": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0},
                    "description": "items sold from the opening to the end of each bucket, the"
                    " first starting at starts_at; the last is the bucket of now, so far",
                },
            },
        },
    }
    return paths, schemas


def _security_schemes(auth_header: str) -> dict[str, Any]:
    """Identity (FLASHSALE_AUTH): how a request names its user, by mode."""
    return {
        "jwt": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "FLASHSALE_AUTH=jwt: the token's `sub` is the user. HS256, RS256 or"
            " ES256 by the configured key; `exp` required; `aud`, `iss` checked when configured.",
        },
        "header": {
            "type": "apiKey",
            "in": "header",
            "name": auth_header,
            "description": "FLASHSALE_AUTH=header: the user, as the gateway in front"
            " authenticated it (the gateway removes this header from what clients send).",
        },
    }


def _complete(paths: dict[str, Any], auth: str) -> None:
    """What every operation shares: the HTTP layer's statuses, the 401's challenge, and HEAD
    beside every GET (the same answers without a body)."""
    challenge = {
        "WWW-Authenticate": {
            "description": "RFC 6750 Bearer challenge (FLASHSALE_AUTH=jwt).",
            "required": auth == "jwt",
            "schema": {"type": "string"},
        }
    }
    for item in paths.values():
        for operation in item.values():
            responses = operation["responses"]
            for status in _HTTP_LAYER_STATUSES:
                responses.setdefault(status, _error("invalid_request", status=status))
            if "401" in responses:
                responses["401"]["headers"] = challenge
        get = item.get("get")
        if get is not None:
            item["head"] = {
                **get,
                "summary": f"{get['summary']} (status and headers only)",
                "operationId": f"{get['operationId']}Head",
                "responses": {
                    status: {k: v for k, v in response.items() if k != "content"}
                    for status, response in get["responses"].items()
                },
            }


def document(
    auth: str = "off", auth_header: str = "X-User-Id", waiting_room: bool = False
) -> dict[str, Any]:
    """The document of a service run with this FLASHSALE_AUTH (and FLASHSALE_AUTH_HEADER), with
    the waiting room's routes only when it is on."""
    identity_on = auth != "off"
    queue_paths, queue_schema = _waiting_room() if waiting_room else ({}, None)
    board_paths, board_schemas = _board()
    pass_header = [_PASS_HEADER] if waiting_room else []
    # With identity on, checkout and purchase need it (the mode's scheme) and user_id is optional.
    identified = {"security": [{auth: []}]} if identity_on else {}
    user_text = "who checks out" + (
        "; may be left out, and when given must be the identity (else 403 forbidden)"
        if identity_on
        else ""
    )
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "flashsale",
            "version": "1",
            "description": "Exactly N items every period; never oversold."
            f" Identity (FLASHSALE_AUTH): {auth}.",
        },
        "paths": {
            "/checkout": {
                "post": {
                    "summary": "Reserve an item of the current sale for a user",
                    "operationId": "checkout",
                    **identified,
                    "parameters": [
                        _query("user_id", _TOKEN, not identity_on, user_text),
                        _query("id", _TOKEN, True, "an item id of the current sale"),
                        *pass_header,
                    ],
                    "responses": {"200": _ok("Reservation"), **_by_status(*CHECKOUT_ERRORS)},
                }
            },
            "/purchase": {
                "post": {
                    "summary": "Buy the item a checkout code reserves (with identity on, only"
                    " its holder may)",
                    "operationId": "purchase",
                    **identified,
                    "parameters": [
                        _query(
                            "code",
                            {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$"},
                            True,
                            "the code a checkout returned",
                        )
                    ],
                    "responses": {"200": _ok("Purchase"), **_by_status(*PURCHASE_ERRORS)},
                }
            },
            **queue_paths,
            "/sale/status": {
                "get": {
                    "summary": "Figures of the current sale",
                    "operationId": "saleStatus",
                    "responses": {
                        "200": _ok("SaleStatus"),
                        **_by_status("overloaded", "rate_limited", "no_active_sale", "unavailable"),
                    },
                }
            },
            "/sale/items": {
                "get": {
                    "summary": "Items of the current sale, a page at a time",
                    "operationId": "saleItems",
                    "parameters": _PAGE_PARAMETERS,
                    "responses": {
                        "200": _ok("ItemPage"),
                        **_by_status(*PAGE_ERRORS),
                    },
                }
            },
            **board_paths,
            "/images/{sale_id}/{item_id}.svg": {
                "get": {
                    "summary": "An item's picture",
                    "operationId": "itemImage",
                    "parameters": [
                        {
                            "name": "sale_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "item_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "SVG image",
                            "content": {"image/svg+xml": {"schema": {"type": "string"}}},
                        },
                        **_by_status("overloaded", "rate_limited", "item_not_found", "unavailable"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process is alive",
                    "operationId": "healthz",
                    "responses": {"200": _ok("Health")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Redis and PostgreSQL answer",
                    "operationId": "readyz",
                    "responses": {"200": _ok("Health"), **_by_status("unavailable")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "operationId": "metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": _security_schemes(auth_header),
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {
                                    "type": "string",
                                    "enum": [
                                        *ERRORS,
                                        "not_found",
                                        "method_not_allowed",
                                        "internal_error",
                                    ],
                                },
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
                "Reservation": {
                    "type": "object",
                    "required": ["code", "sale_id", "item_id", "expires_at"],
                    "properties": {
                        "code": {"type": "string"},
                        "sale_id": {"type": "string"},
                        "item_id": {"type": "string"},
                        "expires_at": _TIMESTAMP,
                    },
                },
                "Purchase": {
                    "type": "object",
                    "required": ["sale_id", "item_id", "user_id", "purchased_at"],
                    "properties": {
                        "sale_id": {"type": "string"},
                        "item_id": {"type": "string"},
                        "user_id": {"type": "string"},
                        "purchased_at": _TIMESTAMP,
                    },
                },
                "SaleStatus": {
                    "type": "object",
                    "required": [
                        *_SALE_FIELDS,
                        "items_sold",
                        "items_reserved",
                        "remaining_items",
                    ],
                    "properties": {
                        **_SALE_FIELDS,
                        "items_sold": {"type": "integer"},
                        "items_reserved": {"type": "integer"},
                        "remaining_items": {"type": "integer"},
                    },
                },
                "ItemPage": _page(
                    {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "image_url": {"type": "string"},
                    }
                ),
                "Health": {"type": "object", "properties": {"status": {"type": "string"}}},
                **board_schemas,
                **({"QueueTicket": queue_schema} if queue_schema else {}),
            },
        },
    }
    _complete(doc["paths"], auth)
    return doc
