"""A metered service (its own scrape port) and a real Prometheus scraping it, fresh for each test module
(the scrape test counts exactly what its journeys did)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Emulator, Journeys, RunningService, build_service, free_port
from otp_step_client import StepExecutorClient

from .prometheus import RULES, Prometheus


@pytest.fixture(scope="module")
def metered_service(connections_file: Path) -> Iterator[RunningService]:
    """A service of its own (fresh counters) with the scrape endpoint on a free loopback port."""
    service = build_service(connections_file, metrics_listen=f"127.0.0.1:{free_port()}")
    service.start()
    yield service
    service.stop(grace=1)


@pytest.fixture(scope="module")
def prometheus(
    metered_service: RunningService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """Prometheus scraping the metered service every second, with the alert rules of deploy/prometheus."""
    metrics = metered_service.service.metrics
    assert metrics is not None
    server = Prometheus(
        tmp_path_factory.mktemp("prometheus"),
        free_port(),
        [f"127.0.0.1:{metrics.port}"],
        sorted(p for p in RULES.glob("*.yml") if not p.name.endswith("_test.yml")),
    )
    yield server
    server.stop()


@pytest.fixture
def metered_journeys(metered_service: RunningService, emulator: Emulator) -> Iterator[Journeys]:
    """Journeys against the metered service."""
    with StepExecutorClient(f"127.0.0.1:{metered_service.port}", timeout=10) as client:
        yield Journeys(client, emulator)
    emulator.clear_faults()
