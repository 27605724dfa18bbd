"""Settings are validated once, at start-up, with errors that name the variable and the fix."""

from __future__ import annotations

import pytest
from otp_step_service.config.settings import ServiceSettings, SettingsError


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"challenge_store": "redis://127.0.0.1:6379/0"}, "OTP_STEP_CHALLENGE_KEYS_FILE"),
        ({"challenge_store": "memcached://x"}, "OTP_STEP_CHALLENGE_STORE"),
        ({"max_steps_per_caller": "500"}, "OTP_STEP_MAX_STEPS_PER_CALLER"),
        ({"max_open_rpcs_per_caller": "4096"}, "OTP_STEP_MAX_OPEN_RPCS_PER_CALLER"),
        ({"listen": "no-port"}, "OTP_STEP_LISTEN"),
        ({"processes": "2"}, "OTP_STEP_CHALLENGE_STORE=redis://"),
        ({"max_concurrent_steps": "zero"}, "OTP_STEP_MAX_CONCURRENT_STEPS"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_variable(overrides: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as raised:
        ServiceSettings.from_env(**overrides)
    assert named in str(raised.value)


def test_a_redis_url_with_a_password_is_not_echoed() -> None:
    with pytest.raises(SettingsError) as raised:
        ServiceSettings.from_env(challenge_store="redsi://:hunter2@cache:6379")
    assert "hunter2" not in str(raised.value)
