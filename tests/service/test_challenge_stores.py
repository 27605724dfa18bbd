"""Both challenge stores keep the same promises; with Redis, instances share challenges."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from harness import Emulator, Journeys, build_service, free_port, wrong_code
from otp_step_client import StepExecutorClient
from otp_step_service.adapters.memory_store import InMemoryChallengeStore
from otp_step_service.adapters.redis_store import RedisChallengeStore
from otp_step_service.steps.challenges import (
    EXPIRED_GRACE_SECONDS,
    AttemptVerdict,
    Challenge,
    ChallengeKey,
    ChallengeStore,
    ReservationVerdict,
)
from otp_step_service.steps.outcomes import Channel
from stepexecutor.v1 import step_executor_pb2 as pb


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[ChallengeStore]:
    if request.param == "memory":
        yield InMemoryChallengeStore()
        return
    url = request.getfixturevalue("redis_url")
    redis.Redis.from_url(url).flushdb()
    yield RedisChallengeStore.from_url(url)


def _challenge(ttl: float = 60, max_attempts: int = 3, nonce: str = "n1", **extra: object) -> Challenge:
    return Challenge(
        "ada",
        "session-xyz",
        Channel.EMAIL,
        "a***@e***",
        time.time() + ttl,
        max_attempts,
        nonce=nonce,
        **extra,
    )


KEY = ChallengeKey("demo", "run-1", "ada@example.com")


def test_attempts_are_spent_one_by_one_then_the_challenge_is_gone(store: ChallengeStore) -> None:
    store.save(KEY, _challenge(max_attempts=2))
    first = store.begin_attempt(KEY, time.time())
    second = store.begin_attempt(KEY, time.time())
    assert first.verdict is second.verdict is AttemptVerdict.GRANTED
    assert first.challenge is not None and first.challenge.attempts_remaining == 1
    assert store.begin_attempt(KEY, time.time()).verdict is AttemptVerdict.EXHAUSTED
    assert store.begin_attempt(KEY, time.time()).verdict is AttemptVerdict.NOT_FOUND


def test_a_refunded_attempt_can_be_spent_again(store: ChallengeStore) -> None:
    store.save(KEY, _challenge(max_attempts=1))
    assert store.begin_attempt(KEY, time.time()).verdict is AttemptVerdict.GRANTED
    store.refund_attempt(KEY, "n1")
    assert store.begin_attempt(KEY, time.time()).verdict is AttemptVerdict.GRANTED


def test_an_expired_challenge_is_reported_once_and_removed(store: ChallengeStore) -> None:
    store.save(KEY, _challenge(ttl=60))
    assert store.begin_attempt(KEY, time.time() + 61).verdict is AttemptVerdict.EXPIRED
    assert store.begin_attempt(KEY, time.time()).verdict is AttemptVerdict.NOT_FOUND


def test_failures_count_within_a_window_and_can_be_forgiven(store: ChallengeStore) -> None:
    assert store.events("failures:x") == 0
    assert [store.count_event("failures:x", 60) for _ in range(3)] == [1, 2, 3]
    store.uncount_event("failures:x")
    assert store.events("failures:x") == 2
    store.uncount_event("failures:none")
    assert store.events("failures:none") == 0


def test_an_expired_challenge_outlives_other_writes_long_enough_to_be_reported(store: ChallengeStore) -> None:
    store.save(KEY, _challenge(ttl=1))
    other = ChallengeKey("demo", "run-2", "ada@example.com")
    deadline = time.monotonic() + 5
    while store.load(KEY) is not None:  # until it has expired
        assert time.monotonic() < deadline
        time.sleep(0.05)
    store.save(other, _challenge())  # a write sweeps expired entries in the memory store
    assert store.begin_attempt(KEY, time.time()).verdict is AttemptVerdict.EXPIRED


def test_a_stale_nonce_touches_nothing(store: ChallengeStore) -> None:
    store.save(KEY, _challenge(nonce="new"))
    assert store.begin_attempt(KEY, time.time()).verdict is AttemptVerdict.GRANTED
    store.refund_attempt(KEY, "old")
    store.discard(KEY, "old")
    grant = store.begin_attempt(KEY, time.time())
    assert grant.challenge is not None
    assert grant.challenge.attempts_used == 2


def test_a_reservation_holds_the_key_against_resends_and_replays_its_execution(store: ChallengeStore) -> None:
    now = time.time()
    first = store.reserve(
        KEY, _challenge(nonce="a", pending=True, step_execution_id="x", sent_at=now), now, 30
    )
    assert first.verdict is ReservationVerdict.RESERVED
    assert store.begin_attempt(KEY, now).verdict is AttemptVerdict.NOT_FOUND  # pending: no challenge yet
    again = store.reserve(
        KEY, _challenge(nonce="b", pending=True, step_execution_id="x", sent_at=now), now, 30
    )
    assert again.verdict is ReservationVerdict.TOO_SOON  # same execution, still being sent
    store.save(KEY, _challenge(nonce="a", step_execution_id="x", sent_at=now))
    replay = store.reserve(
        KEY, _challenge(nonce="c", pending=True, step_execution_id="x", sent_at=now), now, 30
    )
    assert replay.verdict is ReservationVerdict.REPLAY
    assert replay.challenge is not None
    assert replay.challenge.nonce == "a"
    other = store.reserve(
        KEY, _challenge(nonce="d", pending=True, step_execution_id="y", sent_at=now), now + 5, 30
    )
    assert other.verdict is ReservationVerdict.TOO_SOON
    assert 24 <= other.wait_seconds <= 25
    later = store.reserve(
        KEY, _challenge(nonce="e", pending=True, step_execution_id="y", sent_at=now), now + 31, 30
    )
    assert later.verdict is ReservationVerdict.RESERVED


def test_a_discarded_challenge_is_not_found(store: ChallengeStore) -> None:
    store.save(KEY, _challenge())
    assert store.load(KEY) is not None
    store.discard(KEY, "n1")
    assert store.load(KEY) is None


def test_the_memory_store_forgets_expired_challenges_by_itself() -> None:
    now = [1000.0]
    store = InMemoryChallengeStore(clock=lambda: now[0])
    for i in range(100):
        store.save(
            ChallengeKey("demo", f"run-{i}", "ada@example.com"),
            Challenge("ada", "s", Channel.EMAIL, "m", 1010.0, 3),
        )
    store.count_event("failures:x", 5)
    assert len(store) == 101
    now[0] = 1011.0
    assert len(store) == 100  # expired, but kept a grace period so Validate can still say "expired"
    now[0] = 1011.0 + EXPIRED_GRACE_SECONDS
    assert len(store) == 0


def test_instances_sharing_redis_validate_each_others_challenges(
    connections_file: Path, redis_url: str, emulator: Emulator
) -> None:
    first = build_service(connections_file, challenge_store=redis_url)
    second = build_service(connections_file, challenge_store=redis_url)
    first.server.start()
    second.server.start()
    try:
        with (
            StepExecutorClient(f"127.0.0.1:{first.server.port}") as a,
            StepExecutorClient(f"127.0.0.1:{second.server.port}") as b,
        ):
            on_a, on_b = Journeys(a, emulator), Journeys(b, emulator)
            before = len(emulator.outbox("ada@example.com"))
            sent, journey = on_a.generate("ada@example.com")
            assert sent.WhichOneof("outcome") == "success"
            code = emulator.latest_code("ada@example.com", after=before)
            wrong = on_b.validate(journey, "ada@example.com", wrong_code(code))
            assert wrong.failure.attempts_remaining == 2
            again = on_a.validate(journey, "ada@example.com", wrong_code(code))
            assert again.failure.attempts_remaining == 1
            assert on_b.validate(journey, "ada@example.com", code).WhichOneof("outcome") == "success"
            assert (
                on_a.validate(journey, "ada@example.com", code).failure.code
                == pb.FAILURE_CODE_CHALLENGE_NOT_FOUND
            )
    finally:
        first.server.stop(1)
        second.server.stop(1)


def test_an_unreachable_store_is_a_retryable_system_failure(
    connections_file: Path, emulator: Emulator
) -> None:
    closed = free_port()
    service = build_service(connections_file, challenge_store=f"redis://127.0.0.1:{closed}/0")
    service.server.start()
    try:
        with StepExecutorClient(f"127.0.0.1:{service.server.port}") as client:
            response, _ = Journeys(client, emulator).generate("ada@example.com")
    finally:
        service.server.stop(1)
    assert response.failure.code == pb.FAILURE_CODE_CHALLENGE_STORE_UNAVAILABLE
    assert response.failure.category == pb.ERROR_CATEGORY_SYSTEM
    assert response.failure.retryable
