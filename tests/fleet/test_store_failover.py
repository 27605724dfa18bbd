"""A Redis primary dies under steady load (kill -9): behind Sentinel, and in a Cluster. Every step ends OK or
with the retryable CHALLENGE_STORE_UNAVAILABLE failure (never INTERNAL, never another code), the service
recovers by itself within 10 s, and what was counted before the failover is still counted after it (the store
WAITs for the replica before Cognito is asked)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import Emulator, Journeys, RunningService, build_service, wrong_code
from otp_step_client import Journey, StepExecutorClient, UnavailableError
from redis_topology import Cluster, RedisNode, SentinelSet
from stepexecutor.v1 import step_executor_pb2 as pb

RECOVERY_SECONDS = 10.0
EMAIL = "ada@example.com"
UNAVAILABLE = pb.FAILURE_CODE_CHALLENGE_STORE_UNAVAILABLE


def _kind(step: Callable[[], pb.GenerateOtpResponse | pb.ValidateOtpResponse]) -> str:
    """How one step ended: the store failing before Cognito was asked refuses it (UNAVAILABLE, retryable, which
    the client's service config has already retried), after it the step answers its failure outcome."""
    try:
        response = step()
    except UnavailableError as refused:
        if refused.reason == "CHALLENGE_STORE_UNAVAILABLE" and refused.retry_after:
            return "unavailable"
        return f"UNAVAILABLE {refused.reason}"
    if response.WhichOneof("outcome") == "success":
        return "ok"
    failure = response.failure
    if failure.code == UNAVAILABLE and failure.retryable:
        return "unavailable"
    return pb.FailureCode.Name(failure.code)


def _started(service: RunningService) -> RunningService:
    service.start()
    return service


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[SentinelSet]:
    topology = SentinelSet(tmp_path / "sentinel")
    try:
        yield topology.start()
    finally:
        topology.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    topology = Cluster(tmp_path / "cluster")
    try:
        yield topology.start()
    finally:
        topology.stop()


def _ride_out_a_failover(
    url: str, kill: RedisNode, connections_file: Path, emulator: Emulator, keys_file: Path
) -> float:
    """Journeys before, during and after `kill` dies; returns the seconds from the kill to the first step
    that succeeded after it."""
    service = _started(
        build_service(connections_file, challenge_store=url, challenge_keys_file=str(keys_file))
    )
    try:
        with StepExecutorClient(f"127.0.0.1:{service.port}", timeout=10) as client:
            journeys = Journeys(client, emulator)
            # Begun before: a challenge with one wrong code spent.
            before = len(emulator.outbox(EMAIL))
            sent, kept = journeys.generate(EMAIL)
            assert sent.WhichOneof("outcome") == "success", sent
            code = emulator.latest_code(EMAIL, after=before)
            assert journeys.validate(kept, EMAIL, wrong_code(code)).failure.attempts_remaining == 2

            kill.kill()
            killed = time.monotonic()
            outcomes: Counter[str] = Counter()
            recovered = None
            while time.monotonic() - killed < RECOVERY_SECONDS + 5:
                journey: Journey = journeys.journey()
                outcomes[_kind(lambda j=journey: journeys.generate("grace@example.com", journey=j)[0])] += 1
                if outcomes["ok"]:
                    recovered = time.monotonic() - killed
                    break
            assert set(outcomes) <= {"ok", "unavailable"}, outcomes
            assert recovered is not None and recovered <= RECOVERY_SECONDS, (recovered, outcomes)
            # After: the wrong code counted before the failover is still counted, the journey goes on.
            after = journeys.validate(kept, EMAIL, wrong_code(code))
            assert after.failure.attempts_remaining == 1, after
            assert journeys.validate(kept, EMAIL, code).WhichOneof("outcome") == "success"
            print(f"\nrecovered {recovered:.2f} s after kill -9 of {kill.port}; during it: {dict(outcomes)}")
            return recovered
    finally:
        service.stop()


def test_a_sentinel_failover_is_ridden_out_and_loses_no_counter(
    sentinel: SentinelSet, connections_file: Path, emulator: Emulator, keys_file: Path
) -> None:
    _ride_out_a_failover(sentinel.url, sentinel.primary(), connections_file, emulator, keys_file)


def test_a_cluster_primary_failover_is_ridden_out_and_loses_no_counter(
    cluster: Cluster, connections_file: Path, emulator: Emulator, keys_file: Path
) -> None:
    from otp_step_service.adapters.redis_store import connection_tag

    # The primary serving the demo connection's slot (every key of a journey of it is there).
    primary = cluster.primary_of(connection_tag("demo"))
    _ride_out_a_failover(cluster.url, primary, connections_file, emulator, keys_file)
