"""The gRPC service config the Python client ships is the one every example uses, copy for copy, and it
retries only the methods that are safe to repeat."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from otp_step_client import CHANNEL_OPTIONS, SERVICE_CONFIG
from otp_step_service.config.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
# Each example reads its own copy (Go embeds it, TypeScript reads it beside dist/, Java from the class path):
# examples are copied out of the repository one folder at a time.
COPIES = (
    "examples/go/service_config.json",
    "examples/ts/service_config.json",
    "examples/java/src/main/resources/service_config.json",
)


@pytest.mark.parametrize("copy", COPIES)
def test_every_example_uses_the_clients_service_config(copy: str) -> None:
    assert json.loads((ROOT / copy).read_text()) == SERVICE_CONFIG, (
        f"{copy} differs from otp_step_client.SERVICE_CONFIG: copy examples/go/service_config.json over it"
    )


def test_no_other_copy_is_left_behind() -> None:
    found = set()
    for folder, children, files in os.walk(ROOT / "examples"):
        children[:] = [c for c in children if c not in {"node_modules", "target", "dist"}]  # build output
        if "service_config.json" in files:
            found.add(str((Path(folder) / "service_config.json").relative_to(ROOT)))
    assert found == set(COPIES)


def test_validate_is_never_retried_and_generate_is() -> None:
    retried: set[str] = set()
    for entry in SERVICE_CONFIG["methodConfig"]:  # type: ignore[attr-defined]
        config: dict[str, Any] = entry
        assert config["waitForReady"] is True
        if "retryPolicy" in config:
            assert config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
            retried |= {name["method"] for name in config["name"]}
    assert retried == {"GenerateOtp", "CheckConnection"}


def test_keepalive_pings_no_more_often_than_the_server_accepts() -> None:
    options = dict(CHANNEL_OPTIONS)
    accepted_ms = ServiceSettings.model_fields["min_client_ping_seconds"].default * 1000
    assert int(options["grpc.keepalive_time_ms"]) >= accepted_ms
    assert json.loads(str(options["grpc.service_config"])) == SERVICE_CONFIG
