"""Configuration comes from the environment, and a malformed setting is refused by name (what
the commands then say is in tests/system/test_config.py)."""

from __future__ import annotations

import pytest

from flashsale.config import ConfigError, Settings


def test_defaults_are_the_contracts() -> None:
    settings = Settings.from_env({})
    assert (settings.port, settings.items, settings.period, settings.user_limit) == (
        8080,
        10_000,
        3600,
        10,
    )
    assert settings.rate_per_ip == 0 and settings.access_log and not settings.redis_cluster


def test_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "FLASHSALE_ITEMS": "200",
            "FLASHSALE_PERIOD": "20",
            "FLASHSALE_CHECKOUT_TTL": "2",
            "FLASHSALE_RATE_PER_USER": "0.5",
            "FLASHSALE_ACCESS_LOG": "off",
            "FLASHSALE_REDIS_CLUSTER": "on",
        }
    )
    assert (settings.items, settings.period, settings.checkout_ttl) == (200, 20, 2)
    assert settings.rate_per_user == 0.5
    assert not settings.access_log and settings.redis_cluster


@pytest.mark.parametrize(
    "name, value",
    [
        ("FLASHSALE_ITEMS", "many"),
        ("FLASHSALE_ITEMS", "0"),
        ("PORT", "-1"),
        ("FLASHSALE_SWEEP_INTERVAL", "soon"),
    ],
)
def test_a_malformed_setting_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_settings_that_do_not_fit_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="FLASHSALE_PENDING_GRACE must exceed"):
        Settings.from_env({"FLASHSALE_PENDING_GRACE": "2", "FLASHSALE_REDIS_TIMEOUT": "5"})
    with pytest.raises(ConfigError, match="FLASHSALE_PROBE_PORT must differ"):
        Settings.from_env({"FLASHSALE_PROBE_PORT": "8080"})
