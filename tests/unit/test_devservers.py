"""Which binaries the dev/test servers run: the system's first, and a missing one names the
packages and the extra that provide it."""

from __future__ import annotations

from pathlib import Path

import pytest

from flashsale.dev.servers import DevServerError, find_redis_server
from tests.support.tools import require


def test_missing_binaries_name_the_packages_and_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("FLASHSALE_DEVSERVERS", "system")
    with pytest.raises(DevServerError) as excinfo:
        find_redis_server()
    message = str(excinfo.value)
    assert "apt-get install redis-server postgresql" in message
    assert "flashsale[embedded]" in message


def test_system_binaries_come_first(monkeypatch: pytest.MonkeyPatch) -> None:
    system = require("redis-server")
    monkeypatch.delenv("FLASHSALE_DEVSERVERS", raising=False)
    assert find_redis_server() == Path(system)
