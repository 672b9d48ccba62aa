"""The WSGI entry point gunicorn loads in each worker (after gevent has patched the world)."""

from __future__ import annotations

from psycogreen.gevent import patch_psycopg

from flashsale.config import Settings
from flashsale.logs import configure_logging
from flashsale.web.app import create_app
from flashsale.wiring import build_service

# psycopg2 blocks the whole worker unless it waits through gevent.
patch_psycopg()

_settings = Settings.from_env()
configure_logging(_settings.log_level)
application = create_app(build_service(_settings))
