"""The health command's defaults: the settings' own variables, and the address a probe in the container reaches."""

from __future__ import annotations

from otp_step_service.app import health_probe
from otp_step_service.app.health_probe import default_target
from otp_step_service.config.settings import ServiceSettings, variable


def test_the_probe_names_the_settings_variables_and_default() -> None:
    assert variable("health_listen") == health_probe.HEALTH_LISTEN_VARIABLE
    assert variable("listen") == health_probe.LISTEN_VARIABLE
    assert ServiceSettings.model_fields["listen"].default == health_probe.DEFAULT_LISTEN


def test_the_health_port_is_asked_before_the_grpc_port() -> None:
    both = {"OTP_STEP_HEALTH_LISTEN": "0.0.0.0:50052", "OTP_STEP_LISTEN": "0.0.0.0:50051"}
    assert default_target(both) == "127.0.0.1:50052"
    assert default_target({"OTP_STEP_LISTEN": "[::]:7000"}) == "[::1]:7000"
    assert default_target({"OTP_STEP_LISTEN": "10.0.0.5:7000"}) == "10.0.0.5:7000"
    assert default_target({}) == "127.0.0.1:50051"
