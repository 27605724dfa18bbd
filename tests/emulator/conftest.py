"""Fixtures: a real emulator on port 0, reset per test, the demo seed, a boto3 client over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cognito_emulator import EmulatorServer, EmulatorSettings, seed_demo

from .support import REGION, Demo, http, make_client


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorServer]:
    """One emulator for the session, on a free port."""
    with EmulatorServer(host="127.0.0.1", port=0, settings=EmulatorSettings()) as server:
        yield server


@pytest.fixture
def fresh(emulator: EmulatorServer) -> Iterator[EmulatorServer]:
    """The emulator with moto's state, outbox, sessions, faults reset and default settings."""
    status, _ = http("POST", f"{emulator.endpoint_url}/moto-api/reset", {})
    assert status == 200
    emulator.runtime.update_settings(EmulatorSettings().to_json())
    yield emulator
    http("DELETE", f"{emulator.endpoint_url}/_faults")


@pytest.fixture
def demo(fresh: EmulatorServer) -> Demo:
    """The demo pool, client and users, freshly seeded."""
    return Demo(fresh.endpoint_url, seed_demo(fresh.endpoint_url, REGION), make_client(fresh.endpoint_url))


@pytest.fixture
def cognito(fresh: EmulatorServer) -> Any:
    """A boto3 client on the freshly reset emulator."""
    return make_client(fresh.endpoint_url)
