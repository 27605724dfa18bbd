"""The store over TLS against real TLS redis-server processes: `rediss://`, `rediss+sentinel://` and
`rediss+cluster://`, each node TLS only with client certificates required (and replication, the cluster bus
and the sentinels' links over TLS), the service as the documented least-privilege user with its password from
a file. Journeys run; a Redis whose certificate the CA file does not vouch for is refused with a typed,
retryable failure and a log line that says why, with no secret in it."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Emulator, Journeys, RunningService, build_service, free_port, wrong_code
from otp_step_client import StepExecutorClient
from redis_topology import SERVICE_USER, Cluster, RedisNode, SentinelSet, Tls, _server_args

from .emulated_pool import fleet_connections
from .step_outcomes import STORE_UNAVAILABLE, step_kind

EMAIL = "ada@example.com"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A CA, the nodes' certificate and a client certificate for the service."""
    return Tls.issue(tmp_path_factory.mktemp("redis-tls"))


@pytest.fixture(scope="module")
def connections_file(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One connection (the journeys' "demo"): a service with the suite's twenty takes seconds to warm."""
    return fleet_connections(
        tmp_path_factory.mktemp("tls-connections") / "connections.toml", emulator, {"demo": {}}
    )


@pytest.fixture
def password(tmp_path: Path) -> tuple[str, Path]:
    """The service user's password, and the file the service reads it from."""
    value = secrets.token_urlsafe(16)
    path = tmp_path / "redis.password"
    path.write_text(value + "\n")
    return value, path


def _service(
    connections_file: Path,
    keys_file: Path,
    url: str,
    tls: Tls,
    password_file: Path,
    ca_file: Path | None = None,
    client_certificate: bool = True,
) -> RunningService:
    """A service on `url` (the service user's name in it) with the TLS files and the password file."""
    certificate = (
        {
            "challenge_store_cert_file": str(tls.client_cert_file),
            "challenge_store_key_file": str(tls.client_key_file),
        }
        if client_certificate
        else {}
    )
    service = build_service(
        connections_file,
        challenge_store=url,
        challenge_keys_file=str(keys_file),
        challenge_store_password_file=str(password_file),
        challenge_store_ca_file=str(ca_file or tls.ca_file),
        **certificate,
    )
    service.start()
    return service


def _journey_runs(service: RunningService, emulator: Emulator) -> None:
    """Generate, a wrong code (counted), the right code."""
    with StepExecutorClient(f"127.0.0.1:{service.port}", timeout=10) as client:
        journeys = Journeys(client, emulator)
        before = len(emulator.outbox(EMAIL))
        sent, journey = journeys.generate(EMAIL)
        assert sent.WhichOneof("outcome") == "success", sent
        code = emulator.latest_code(EMAIL, after=before)
        assert journeys.validate(journey, EMAIL, wrong_code(code)).failure.attempts_remaining == 2
        assert journeys.validate(journey, EMAIL, code).WhichOneof("outcome") == "success"


def _as_service_user(url: str) -> str:
    """`url` naming the service user (its password comes from the file)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{SERVICE_USER}@{rest}"


@pytest.fixture
def tls_node(tls: Tls, tmp_path: Path) -> Iterator[RedisNode]:
    port = free_port()
    node = RedisNode(port, tmp_path / "redis", _server_args(port, tls=tls), tls=tls).start()
    try:
        yield node
    finally:
        node.stop()


def test_rediss_with_a_client_certificate_and_the_service_user(
    tls_node: RedisNode,
    tls: Tls,
    password: tuple[str, Path],
    connections_file: Path,
    emulator: Emulator,
    keys_file: Path,
) -> None:
    tls_node.add_service_user(password[0])
    url = _as_service_user(f"rediss://127.0.0.1:{tls_node.port}/0")
    service = _service(connections_file, keys_file, url, tls, password[1])
    try:
        _journey_runs(service, emulator)
    finally:
        service.stop()


@pytest.mark.parametrize(
    ("topology", "scheme"), [(SentinelSet, "rediss+sentinel://"), (Cluster, "rediss+cluster://")]
)
def test_rediss_sentinel_and_cluster(
    topology: type[SentinelSet] | type[Cluster],
    scheme: str,
    tls: Tls,
    password: tuple[str, Path],
    connections_file: Path,
    emulator: Emulator,
    keys_file: Path,
    tmp_path: Path,
) -> None:
    redis = topology(tmp_path / "redis", tls=tls)
    try:
        redis.start().add_service_user(password[0])
        assert redis.url.startswith(scheme)
        service = _service(connections_file, keys_file, _as_service_user(redis.url), tls, password[1])
        try:
            _journey_runs(service, emulator)
        finally:
            service.stop()
    finally:
        redis.stop()


def test_a_redis_the_ca_does_not_vouch_for_or_without_a_client_certificate_is_refused_typed_and_said_why(
    tls_node: RedisNode,
    tls: Tls,
    password: tuple[str, Path],
    connections_file: Path,
    emulator: Emulator,
    keys_file: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tls_node.add_service_user(password[0])
    other = Tls.issue(tmp_path / "other-ca")
    url = _as_service_user(f"rediss://127.0.0.1:{tls_node.port}/0")
    caplog.set_level(logging.INFO)
    for mistake, expected in (
        ({"ca_file": other.ca_file}, "ConnectionError: TLS certificate verify failed"),
        # Under TLS 1.3 the server judges the client's certificate after the handshake: the refusal reaches
        # the service as the alert saying so (TLS handshake failed (TLSV13_ALERT_CERTIFICATE_REQUIRED)) or,
        # when the close wins the race, as a connection closed.
        ({"client_certificate": False}, "ConnectionError"),
    ):
        caplog.clear()
        service = _service(connections_file, keys_file, url, tls, password[1], **mistake)  # type: ignore[arg-type]
        try:
            with StepExecutorClient(f"127.0.0.1:{service.port}", timeout=10) as client:
                refused = Journeys(client, emulator)
                assert step_kind(lambda: refused.generate(EMAIL)[0]) == STORE_UNAVAILABLE  # noqa: B023
        finally:
            service.stop()
        said = [r.getMessage() for r in caplog.records if "challenge store" in r.getMessage()]
        print("\n" + "\n".join(said))
        assert any(expected in line for line in said), said
        for secret in (password[0], *tls.client_key_file.read_text().splitlines()[1:-1]):
            assert secret not in caplog.text
