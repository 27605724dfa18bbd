"""Suite-wide safety: AWS credentials are dummies and no test can reach a real AWS endpoint."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cognito_emulator import EmulatorServer, EmulatorSettings, seed_demo
from harness import Emulator, Journeys, RunningService, build_service, free_port, write_connections
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otp_step_client import StepExecutorClient
from otp_step_service.observability.step_tracer import StepTracerProvider
from redis_topology import Cluster, SentinelSet

# Set before any boto3 client exists. moto accepts any credentials; real ones must never be used here.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
)
for variable in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
    os.environ.pop(variable, None)

TESTS = Path(__file__).resolve().parent
# The fast tier: pure Python, no server or tool outside the virtualenv (`make test-unit`).
UNIT_TIER = ("unit/", "test_architecture.py", "docs/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test is in one tier: `unit` (tests/unit, the guards, the docs) or `integration` (real parts)."""
    for item in items:
        where = item.path.relative_to(TESTS).as_posix()
        tier = "unit" if where.startswith(UNIT_TIER) else "integration"
        item.add_marker(getattr(pytest.mark, tier))
    # The emulator's own tests reset moto's state between tests (POST /moto-api/reset), and moto's state is
    # one per process: run them before any test whose session-wide emulator holds a seeded pool.
    items.sort(key=lambda item: 0 if item.path.relative_to(TESTS).as_posix().startswith("emulator/") else 1)


def require_tool(name: str, install: str) -> str:
    """The path of a program a test needs; when it is missing the test fails saying how to install it."""
    path = shutil.which(name) or (
        str(TESTS.parent / ".bin" / name) if (TESTS.parent / ".bin" / name).exists() else None
    )
    if path is None:
        pytest.fail(f"{name} is not installed: {install}")
    return path


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """The seeded emulator, plus app clients for the LEGACY and no-USER_AUTH cases."""
    with EmulatorServer(host="127.0.0.1", port=0, settings=EmulatorSettings()) as server:
        seed = seed_demo(server.endpoint_url)
        yield Emulator(server.endpoint_url, seed)


@pytest.fixture(scope="session")
def connections_file(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A connections file with one connection per behaviour under test."""
    folder = tmp_path_factory.mktemp("connections")
    admin = emulator.admin()
    legacy = admin.create_user_pool_client(
        UserPoolId=emulator.seed.user_pool_id,
        ClientName="legacy",
        GenerateSecret=True,
        ExplicitAuthFlows=["ALLOW_USER_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        PreventUserExistenceErrors="LEGACY",
    )["UserPoolClient"]
    no_user_auth = admin.create_user_pool_client(
        UserPoolId=emulator.seed.user_pool_id,
        ClientName="no-user-auth",
        GenerateSecret=False,
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]
    secret_file = folder / "demo.secret"
    secret_file.write_text(emulator.seed.client_secret)
    path = folder / "connections.toml"
    write_connections(
        path,
        emulator.seed,
        secret_file,
        {
            "legacy": legacy["ClientId"],
            "legacy_secret": legacy["ClientSecret"],
            "no_user_auth": no_user_auth["ClientId"],
        },
    )
    return path


@pytest.fixture(scope="session")
def service(connections_file: Path) -> Iterator[RunningService]:
    """The real server, started once for the session."""
    service = build_service(connections_file)
    service.start()
    yield service
    service.stop(grace=1)


@pytest.fixture(scope="session")
def client(service: RunningService) -> Iterator[StepExecutorClient]:
    """A client of the running server."""
    with StepExecutorClient(f"127.0.0.1:{service.port}", timeout=10) as client:
        yield client


@pytest.fixture
def journeys(client: StepExecutorClient, emulator: Emulator) -> Iterator[Journeys]:
    """Journeys against the service; faults are cleared after each test."""
    yield Journeys(client, emulator)
    emulator.clear_faults()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port (installed by `make tools`), stopped after the session."""
    binary = require_tool("redis-server", "`make redis` (apt-get install redis-server), or `make tools`")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert process.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A challenge keys file (sessions sealed at rest in Redis): one fresh key."""
    from otp_step_service.adapters.sealing import SessionSealer

    path = tmp_path_factory.mktemp("keys") / "challenge.keys"
    path.write_text(SessionSealer.new_key_line("k1") + "\n")
    path.chmod(0o600)
    return path


_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    """The process-wide in-memory exporter (a global tracer provider can be set only once, so the telemetry and
    security tests share it)."""
    if not isinstance(trace.get_tracer_provider(), StepTracerProvider):
        provider = StepTracerProvider(resource=Resource.create({"service.name": "otp-step-service"}))
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    return _EXPORTER


@pytest.fixture(scope="session")
def sentinel_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    """A real primary, replica and three sentinels on free loopback ports, stopped after the session."""
    topology = SentinelSet(tmp_path_factory.mktemp("sentinel"))
    try:
        yield topology.start()
    finally:
        topology.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real 6-node Redis Cluster on free loopback ports, stopped after the session."""
    topology = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield topology.start()
    finally:
        topology.stop()
