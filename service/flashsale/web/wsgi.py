"""The WSGI entry point gunicorn loads in each worker (after gevent has patched the world)."""

from __future__ import annotations

import gc

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


# Everything built so far (the app, the libraries, their caches) lives as long as the worker.
# Moved out of the collector's generations, a full collection no longer walks them all: under
# the benchmark's load the longest gen-2 pause of a worker went from about 30 ms to 1 ms.
gc.freeze()
