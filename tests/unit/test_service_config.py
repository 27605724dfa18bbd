"""The gRPC service config the Python client ships is the one the Go example embeds, and it retries only the
methods that are safe to repeat."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from otp_step_client import CHANNEL_OPTIONS, SERVICE_CONFIG
from otp_step_service.transport.server import MIN_CLIENT_PING_MS

ROOT = Path(__file__).resolve().parents[2]


def test_the_go_example_embeds_the_clients_service_config() -> None:
    assert json.loads((ROOT / "examples" / "go" / "service_config.json").read_text()) == SERVICE_CONFIG


def test_validate_is_never_retried_and_generate_is() -> None:
    retried: set[str] = set()
    for entry in SERVICE_CONFIG["methodConfig"]:  # type: ignore[attr-defined]
        config: dict[str, Any] = entry
        assert config["waitForReady"] is True
        if "retryPolicy" in config:
            assert config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
            retried |= {name["method"] for name in config["name"]}
    assert "GenerateOtp" in retried and "ValidateOtp" not in retried


def test_keepalive_pings_no_more_often_than_the_server_accepts() -> None:
    options = dict(CHANNEL_OPTIONS)
    assert int(options["grpc.keepalive_time_ms"]) >= MIN_CLIENT_PING_MS
    assert json.loads(str(options["grpc.service_config"])) == SERVICE_CONFIG
