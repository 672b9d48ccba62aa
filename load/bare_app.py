"""The ceiling for the checkout benchmark: a bare Falcon app with no stores.

It answers `POST /checkout` with a JSON body shaped like a real reservation, through the same
orjson media handler the service uses, and is served by the same gunicorn config
(`python:flashsale.server.gunicorn_conf`, gevent workers) with `FLASHSALE_SWEEPER=off`. Whatever the
service loses against it is the cost of the service's own work (validation, the Redis script,
metrics), not of the server stack.

    FLASHSALE_SWEEPER=off WEB_CONCURRENCY=2 PORT=8090 \
        python -m gunicorn --config python:flashsale.server.gunicorn_conf --pythonpath load \
        bare_app:application
"""

from __future__ import annotations

import secrets

import falcon
import falcon.media
import orjson

# A fixed body of the service's size; a fresh code per request would add work the ceiling
# should not have, so only its length is realistic.
_BODY = {
    "code": "20260101T000000Z-3600." + secrets.token_urlsafe(16),
    "sale_id": "20260101T000000Z-3600",
    "item_id": "12345",
    "expires_at": "2026-01-01T00:02:00.000Z",
}


class Checkout:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Read the parameters as the service does, answer a reservation-shaped body."""
        req.get_param("user_id")
        req.get_param("id")
        resp.media = _BODY


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


def create_app() -> falcon.App:
    """The bare app: two routes and the service's JSON handler, nothing else."""
    app = falcon.App()
    json = falcon.media.JSONHandler(dumps=orjson.dumps, loads=orjson.loads)
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = json
    app.add_route("/checkout", Checkout())
    app.add_route("/healthz", Health())
    return app


application = create_app()
