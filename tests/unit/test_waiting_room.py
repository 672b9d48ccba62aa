"""The waiting room needs a pass key of its own (FLASHSALE_PASS_KEY); `flashsale dev` makes one
for its run when the room is on."""

from __future__ import annotations

import pytest

from flashsale.config import ConfigError, Settings, dev_pass_key

KEY = "a-test-pass-key-0123456789abcdef"


def test_the_room_needs_a_pass_key() -> None:
    with pytest.raises(ConfigError, match="FLASHSALE_PASS_KEY"):
        Settings.from_env({"FLASHSALE_WAITING_ROOM": "on"})
    with pytest.raises(ConfigError, match="at least 16"):
        Settings.from_env({"FLASHSALE_WAITING_ROOM": "on", "FLASHSALE_PASS_KEY": "short"})
    assert Settings.from_env({"FLASHSALE_PASS_KEY": ""}).waiting_room is False
    # `flashsale dev` makes one for its run; a key that is set is kept.
    env = {"FLASHSALE_WAITING_ROOM": "on"}
    dev_pass_key(env)
    assert len(env["FLASHSALE_PASS_KEY"]) == 64 and Settings.from_env(env).waiting_room
    env = {"FLASHSALE_WAITING_ROOM": "on", "FLASHSALE_PASS_KEY": KEY}
    dev_pass_key(env)
    assert env["FLASHSALE_PASS_KEY"] == KEY
    off: dict[str, str] = {}
    dev_pass_key(off)
    assert off == {}
