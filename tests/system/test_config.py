"""A malformed or missing setting stops a command plainly: it names the setting and exits 2."""

from __future__ import annotations

from tests.support.processes import flashsale


def test_commands_say_what_is_wrong_and_exit_2(service_env: dict[str, str]) -> None:
    bad = flashsale("sweep", env={**service_env, "FLASHSALE_PERIOD": "hourly"}, check=False)
    assert bad.returncode == 2 and "FLASHSALE_PERIOD" in bad.stderr
    unset = {k: v for k, v in service_env.items() if k != "REDIS_URL"}
    missing = flashsale("open-sale", env=unset, check=False)
    assert missing.returncode == 2 and "REDIS_URL" in missing.stderr
