"""gunicorn's own logger builds no access line: the service writes the one JSON access line of
each request itself."""

from __future__ import annotations

import os
from typing import Any

import pytest

from flashsale.logs import gunicorn_logger


class Untouchable:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"read .{name}")


def test_gunicorn_builds_no_access_line_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a logconfig_dict, gunicorn's own logger builds an access line for every request."""
    from gunicorn import glogging
    from gunicorn.config import Config

    monkeypatch.setattr(glogging, "dictConfig", lambda config: None)  # this process's logging
    config = Config()
    config.set("errorlog", os.devnull)
    config.set("logconfig_dict", {"version": 1})
    logger = gunicorn_logger()(config)
    try:
        logger.access(Untouchable(), Untouchable(), {}, Untouchable())
    finally:
        for handler in logger.error_log.handlers[:]:
            logger.error_log.removeHandler(handler)
            handler.close()
