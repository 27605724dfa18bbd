"""Three instances sharing one Redis behind clients using the shipped service config: calls spread over all of
them, a journey begun on one goes on on another, the limits are exact when concurrent calls land on different
instances, and the server's maximum connection age recycles connections without failing a call."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from harness import Emulator, Journeys, RunningService, build_service, wrong_code
from otp_step_client import StepExecutorClient
from stepexecutor.v1 import step_executor_pb2 as pb


@pytest.fixture(scope="module")
def fleet(connections_file: Path, redis_url: str, keys_file: Path) -> Iterator[list[RunningService]]:
    services = [
        build_service(
            connections_file,
            challenge_store=redis_url,
            challenge_keys_file=str(keys_file),
            max_connection_age_seconds="1",
            max_connection_age_grace_seconds="1",
        )
        for _ in range(3)
    ]
    for service in services:
        service.start()
    try:
        yield services
    finally:
        for service in services:
            service.stop()


def test_journeys_spread_over_three_instances_and_survive_connection_recycling(
    fleet: list[RunningService], emulator: Emulator
) -> None:
    before_sessions = [len(s.store.sessions) for s in fleet]
    target = "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in fleet)
    with StepExecutorClient(target, timeout=10) as client:
        journeys = Journeys(client, emulator)
        started = time.monotonic()
        done = 0
        # Past two connection ages: every connection is recycled at least once while journeys run.
        while done < 9 or time.monotonic() - started < 2.5:
            assert time.monotonic() - started < 60, "bounded in time"  # a fast machine does many journeys
            email = ("ada", "grace")[done % 2] + "@example.com"
            before = len(emulator.outbox(email))
            sent, journey = journeys.generate(email)
            assert sent.WhichOneof("outcome") == "success", sent
            code = emulator.latest_code(email, after=before)
            assert journeys.validate(journey, email, code).WhichOneof("outcome") == "success"
            done += 1
    generated = [len(s.store.sessions) - n for s, n in zip(fleet, before_sessions, strict=True)]
    assert all(generated), f"round_robin reached every instance: {generated}"


def _clients(fleet: list[RunningService], emulator: Emulator) -> list[Journeys]:
    return [Journeys(StepExecutorClient(f"127.0.0.1:{s.port}", timeout=10), emulator) for s in fleet]


def test_concurrent_wrong_codes_over_three_instances_get_exactly_the_attempts(
    fleet: list[RunningService], emulator: Emulator
) -> None:
    on = _clients(fleet, emulator)
    try:
        email = "grace@example.com"
        before = len(emulator.outbox(email))
        sent, journey = on[0].generate(email)  # Generate on one instance...
        assert sent.WhichOneof("outcome") == "success", sent
        wrong = wrong_code(emulator.latest_code(email, after=before))
        with ThreadPoolExecutor(9) as pool:  # ...nine wrong codes at once on all three
            answers = list(pool.map(lambda i: on[i % 3].validate(journey, email, wrong), range(9)))
        judged = sorted(
            a.failure.attempts_remaining for a in answers if a.failure.code == pb.FAILURE_CODE_INVALID_CODE
        )
        others = Counter(
            pb.FailureCode.Name(a.failure.code)
            for a in answers
            if a.failure.code != pb.FAILURE_CODE_INVALID_CODE
        )
        # Three attempts, each spent once fleet-wide: two answered "wrong code, N left", the last one
        # "attempts exhausted"; every other call found the challenge spent or gone.
        assert judged == [1, 2], (judged, others)
        assert others["FAILURE_CODE_ATTEMPTS_EXHAUSTED"] >= 1, others
        assert set(others) <= {"FAILURE_CODE_ATTEMPTS_EXHAUSTED", "FAILURE_CODE_CHALLENGE_NOT_FOUND"}, others
    finally:
        for journeys in on:
            journeys.client.close()


def test_concurrent_sends_over_three_instances_stop_at_the_send_budget(
    fleet: list[RunningService], emulator: Emulator, redis_url: str
) -> None:
    redis.Redis.from_url(redis_url).flushdb()  # this test's counters start at zero
    on = _clients(fleet, emulator)
    try:
        email = "ada@example.com"
        before = len(emulator.outbox(email))
        # The first code names the identifier's Cognito user (until then its codes go out one at a time).
        assert on[0].generate(email, connection="send-cap")[0].WhichOneof("outcome") == "success"
        with ThreadPoolExecutor(7) as pool:  # the connection's cap: 2 codes per identifier a minute
            answers = list(pool.map(lambda i: on[i % 3].generate(email, connection="send-cap")[0], range(7)))
        kinds = Counter(
            "ok" if a.WhichOneof("outcome") == "success" else pb.FailureCode.Name(a.failure.code)
            for a in answers
        )
        # An identifier's own cap answers as a resend that must wait (the window's end), not a budget.
        assert kinds == {"ok": 1, "FAILURE_CODE_RESEND_TOO_SOON": 6}, kinds
        assert all(
            "more than 2 codes" in a.failure.message for a in answers if a.WhichOneof("outcome") != "success"
        )
        assert len(emulator.outbox(email)) - before == 2
    finally:
        for journeys in on:
            journeys.client.close()
