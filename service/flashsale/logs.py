"""Logs as one JSON object per line, the level from the environment."""

from __future__ import annotations

import logging
import sys

import orjson

from flashsale.domain import rfc3339

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": rfc3339(int(record.created * 1000)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    """Every line on stderr one JSON object: Python's warnings too (logger `py.warnings`).
    gunicorn's own lines take the same formatter through gunicorn_conf.logconfig_dict."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)


def gunicorn_logger() -> type:
    """gunicorn's logger class without its access log. The app logs every request itself, and
    gunicorn, once given a logconfig_dict, would build an access line for each request too
    (about 17 us of a worker's time, thrown away). Imported lazily: only gunicorn needs it."""
    from gunicorn.glogging import Logger

    class AppLogsRequests(Logger):
        def access(self, resp, req, environ, request_time) -> None:
            return None

    return AppLogsRequests
