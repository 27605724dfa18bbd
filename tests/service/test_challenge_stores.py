"""Both challenge stores keep the same promises; with Redis, instances share challenges."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from harness import (
    Emulator,
    FailingStore,
    FakeClock,
    Journeys,
    RunningService,
    build_service,
    free_port,
    wrong_code,
)
from otp_step_client import SERVICE_CONFIG, StepExecutorClient, UnavailableError
from otp_step_service.adapters.memory_store import InMemoryChallengeStore
from otp_step_service.adapters.sealing import SessionSealer
from otp_step_service.app.stores import redis_challenge_store
from otp_step_service.steps.challenges import (
    EXPIRED_GRACE_SECONDS,
    USER_FAILURES,
    USER_SENDS,
    AttemptRequest,
    AttemptVerdict,
    Challenge,
    ChallengeKey,
    Judgement,
    SendBudget,
    SendRequest,
    SendResult,
    SendVerdict,
    caller_budget_subject,
    caller_scope,
)
from otp_step_service.steps.errors import ChallengeStoreError
from otp_step_service.steps.outcomes import Channel
from otp_step_service.steps.ports import ChallengeStore
from prometheus_client.parser import text_string_to_metric_families
from redis_topology import Cluster, RedisNode
from stepexecutor.v1 import step_executor_pb2 as pb

StoreFactory = Callable[[], ChallengeStore]


@pytest.fixture(params=["memory", "redis", "sentinel", "cluster"])
def make_store(request: pytest.FixtureRequest) -> StoreFactory:
    """A factory: each contract test builds its store inside its own event loop (redis.asyncio binds to one).
    Behind Sentinel the store WAITs for the replica (its default with replicas); in the cluster every script
    must keep to one slot (CROSSSLOT otherwise)."""
    if request.param == "memory":
        return InMemoryChallengeStore
    sealer = SessionSealer.from_file(request.getfixturevalue("keys_file"))
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushdb()
        return lambda: redis_challenge_store(url, sealer)
    topology = request.getfixturevalue("sentinel_set" if request.param == "sentinel" else "redis_cluster")
    topology.flush()
    return lambda: redis_challenge_store(topology.url, sealer, min_replicas=None)


def run(make_store: StoreFactory, scenario: Callable[[ChallengeStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = make_store()
        try:
            await scenario(store)
        finally:
            await store.aclose()

    asyncio.run(main())


def _challenge(ttl: float = 60, max_attempts: int = 3, nonce: str = "n1", **extra: Any) -> Challenge:
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
SENDS = "sends:ada"
FAILURES = "failures:ada"


def _send(
    nonce: str, now: float | None = None, execution: str = "", limit: int = 10, **placeholder: Any
) -> SendRequest:
    now = time.time() if now is None else now
    return SendRequest(
        key=KEY,
        placeholder=_challenge(
            nonce=nonce, pending=True, step_execution_id=execution, sent_at=now, **placeholder
        ),
        now=now,
        cooldown_seconds=30,
        sends_subject=SENDS,
        send_limit=limit,
        send_window_seconds=60,
        lockout_subject=FAILURES,
        lockout_threshold=3,
    )


def _attempt(now: float | None = None, threshold: int = 10) -> AttemptRequest:
    return AttemptRequest(KEY, time.time() if now is None else now, FAILURES, threshold, 60)


async def _saved(store: ChallengeStore, challenge: Challenge) -> None:
    """A delivered challenge in KEY, the way Generate leaves one."""
    request = _send(challenge.nonce, execution=challenge.step_execution_id)
    assert (await store.begin_send(request)).verdict is SendVerdict.RESERVED
    await store.finish_send(request, SendResult.SENT, challenge)


def test_attempts_are_spent_one_by_one_then_the_challenge_is_gone(make_store: StoreFactory) -> None:
    async def scenario(store: ChallengeStore) -> None:
        await _saved(store, _challenge(max_attempts=2))
        first = await store.begin_attempt(_attempt())
        second = await store.begin_attempt(_attempt())
        assert first.verdict is second.verdict is AttemptVerdict.GRANTED
        assert first.challenge is not None and first.challenge.attempts_remaining == 1
        assert (await store.begin_attempt(_attempt())).verdict is AttemptVerdict.EXHAUSTED
        assert (await store.begin_attempt(_attempt())).verdict is AttemptVerdict.NOT_FOUND
        assert (
            await store.events("demo", FAILURES) == 2
        )  # each granted attempt counted one wrong code up front

    run(make_store, scenario)


def test_an_unjudged_attempt_is_given_back_with_its_wrong_code_count(make_store: StoreFactory) -> None:
    async def scenario(store: ChallengeStore) -> None:
        await _saved(store, _challenge(max_attempts=1))
        assert (await store.begin_attempt(_attempt())).verdict is AttemptVerdict.GRANTED
        await store.finish_attempt(KEY, "n1", Judgement.UNJUDGED, (FAILURES,))
        assert await store.events("demo", FAILURES) == 0
        assert (await store.begin_attempt(_attempt())).verdict is AttemptVerdict.GRANTED

    run(make_store, scenario)


def test_an_unknown_judgement_spends_the_attempt_but_not_the_lockout(make_store: StoreFactory) -> None:
    async def scenario(store: ChallengeStore) -> None:
        await _saved(store, _challenge(max_attempts=2))
        assert (await store.begin_attempt(_attempt())).verdict is AttemptVerdict.GRANTED
        await store.finish_attempt(KEY, "n1", Judgement.UNKNOWN, (FAILURES,))
        assert await store.events("demo", FAILURES) == 0
        grant = await store.begin_attempt(_attempt())
        assert grant.challenge is not None and grant.challenge.attempts_remaining == 0

    run(make_store, scenario)


def test_a_right_code_uses_the_challenge_and_forgives_its_count(make_store: StoreFactory) -> None:
    async def scenario(store: ChallengeStore) -> None:
        await _saved(store, _challenge())
        assert (await store.begin_attempt(_attempt())).verdict is AttemptVerdict.GRANTED
        await store.finish_attempt(KEY, "n1", Judgement.RIGHT, (FAILURES,))
        assert await store.events("demo", FAILURES) == 0
        assert (await store.begin_attempt(_attempt())).verdict is AttemptVerdict.NOT_FOUND

    run(make_store, scenario)


def test_a_locked_identifier_spends_nothing(make_store: StoreFactory) -> None:
    async def scenario(store: ChallengeStore) -> None:
        await _saved(store, _challenge())
        for _ in range(2):
            assert (await store.begin_attempt(_attempt(threshold=2))).verdict is AttemptVerdict.GRANTED
        assert (await store.begin_attempt(_attempt(threshold=2))).verdict is AttemptVerdict.LOCKED
        assert await store.events("demo", FAILURES) == 2

    run(make_store, scenario)


def test_an_expired_challenge_is_reported_once_and_removed(make_store: StoreFactory) -> None:
    async def scenario(store: ChallengeStore) -> None:
        await _saved(store, _challenge(ttl=60))
        assert (await store.begin_attempt(_attempt(now=time.time() + 61))).verdict is AttemptVerdict.EXPIRED
        assert (await store.begin_attempt(_attempt())).verdict is AttemptVerdict.NOT_FOUND

    run(make_store, scenario)


def test_a_stale_nonce_touches_nothing(make_store: StoreFactory) -> None:
    async def scenario(store: ChallengeStore) -> None:
        await _saved(store, _challenge(nonce="new"))
        assert (await store.begin_attempt(_attempt())).verdict is AttemptVerdict.GRANTED
        await store.finish_attempt(KEY, "old", Judgement.WRONG, (FAILURES,))
        await store.finish_send(_send("old"), SendResult.SENT, _challenge(nonce="old"))
        grant = await store.begin_attempt(_attempt())
        assert grant.challenge is not None
        assert grant.challenge.nonce == "new" and grant.challenge.attempts_used == 2
        assert (
            await store.events("demo", FAILURES) == 2
        )  # neither stale settle touched the live challenge's counts

    run(make_store, scenario)


def test_a_reservation_holds_the_key_against_resends_and_replays_its_execution(
    make_store: StoreFactory,
) -> None:
    async def scenario(store: ChallengeStore) -> None:
        now = time.time()
        first = _send("a", now, execution="x", lease_until=now + 10)
        assert (await store.begin_send(first)).verdict is SendVerdict.RESERVED
        assert (await store.begin_attempt(_attempt(now))).verdict is AttemptVerdict.NOT_FOUND  # pending
        again = await store.begin_send(_send("b", now + 1, execution="x"))
        assert again.verdict is SendVerdict.IN_FLIGHT  # same execution, still being sent: wait for it
        assert 8.99 <= again.wait_seconds <= 9.01  # what is left of its lease
        await store.finish_send(
            _send("a", now, execution="x"),
            SendResult.SENT,
            _challenge(nonce="a", step_execution_id="x", sent_at=now),
        )
        replay = await store.begin_send(_send("c", now, execution="x"))
        assert replay.verdict is SendVerdict.REPLAY
        assert replay.challenge is not None and replay.challenge.nonce == "a"
        other = await store.begin_send(_send("d", now + 5, execution="y"))
        assert other.verdict is SendVerdict.TOO_SOON
        assert 24 <= other.wait_seconds <= 25
        later = await store.begin_send(_send("e", now + 31, execution="y"))
        assert later.verdict is SendVerdict.RESERVED
        assert await store.events("demo", SENDS) == 2  # only the reservations that went ahead were counted

    run(make_store, scenario)


def test_a_send_that_certainly_did_not_happen_is_given_back(make_store: StoreFactory) -> None:
    async def scenario(store: ChallengeStore) -> None:
        assert (await store.begin_send(_send("a"))).verdict is SendVerdict.RESERVED
        await store.finish_send(_send("a"), SendResult.NOT_SENT, None)
        assert await store.events("demo", SENDS) == 0
        assert (await store.begin_send(_send("b"))).verdict is SendVerdict.RESERVED  # the key is free again

    run(make_store, scenario)


def test_a_send_that_may_have_happened_counts_and_holds_the_cooldown(make_store: StoreFactory) -> None:
    async def scenario(store: ChallengeStore) -> None:
        now = time.time()
        assert (await store.begin_send(_send("a", now, execution="x"))).verdict is SendVerdict.RESERVED
        unusable = _challenge(nonce="a", sent_at=now, unusable=True)
        await store.finish_send(_send("a", now, execution="x"), SendResult.MAYBE_SENT, unusable)
        assert await store.events("demo", SENDS) == 1
        assert (await store.begin_attempt(_attempt(now))).verdict is AttemptVerdict.NOT_FOUND
        assert (await store.begin_send(_send("b", now + 1, execution="x"))).verdict is SendVerdict.TOO_SOON
        assert (await store.begin_send(_send("c", now + 31))).verdict is SendVerdict.RESERVED

    run(make_store, scenario)


def test_a_lost_reservation_is_taken_over_once_by_its_own_execution(make_store: StoreFactory) -> None:
    async def scenario(store: ChallengeStore) -> None:
        now = time.time()
        lost = _send("a", now, execution="x", lease_until=now + 5)
        assert (await store.begin_send(lost)).verdict is SendVerdict.RESERVED
        # Never settled (its instance died): within its lease a retry of the execution waits for it...
        waiting = await store.begin_send(_send("b", now + 1, execution="x", lease_until=now + 6))
        assert waiting.verdict is SendVerdict.IN_FLIGHT and 3.99 <= waiting.wait_seconds <= 4.01
        # ...another execution sees a code sent at its time, under the cooldown, lease or no lease...
        other = await store.begin_send(_send("c", now + 6, execution="y"))
        assert other.verdict is SendVerdict.TOO_SOON and 23.99 <= other.wait_seconds <= 24.01
        # ...and past the lease, the execution takes it over, the lost send still counted.
        takeover = _send("d", now + 6, execution="x", lease_until=now + 11)
        taken = await store.begin_send(takeover)
        assert taken.verdict is SendVerdict.RESERVED and taken.took_over
        assert await store.events("demo", SENDS) == 2
        # Once: the takeover holds the key with a lease of its own.
        again = await store.begin_send(_send("e", now + 7, execution="x", lease_until=now + 12))
        assert again.verdict is SendVerdict.IN_FLIGHT
        await store.finish_send(
            takeover, SendResult.SENT, _challenge(nonce="d", step_execution_id="x", sent_at=now + 6)
        )
        # The lost attempt settling late (it was only slow) finds its reservation taken: it writes nothing.
        await store.finish_send(lost, SendResult.SENT, _challenge(nonce="a", step_execution_id="x"))
        replay = await store.begin_send(_send("f", now + 8, execution="x"))
        assert replay.verdict is SendVerdict.REPLAY and replay.challenge is not None
        assert replay.challenge.nonce == "d" and not replay.took_over
        assert await store.events("demo", SENDS) == 2

    run(make_store, scenario)


def test_a_takeover_that_sends_nothing_puts_the_lost_reservation_back(make_store: StoreFactory) -> None:
    """A takeover refused after the fact (the caller's budget, taken after the connection's script on Redis,
    is spent; or a WAIT fell short) or settled NOT_SENT leaves the lost reservation as it was: its code may
    have gone out, so it keeps the cooldown for other executions, and its own execution may take it over
    again. Before, Redis deleted it, and another execution sent at once where the memory store answered
    RESEND_TOO_SOON."""

    async def scenario(store: ChallengeStore) -> None:
        now = time.time()
        budget = SendBudget(caller_budget_subject("journeys", 60), 1, 60)

        def attempt(nonce: str, at: float, run: str, execution: str = "x") -> SendRequest:
            request = _send(nonce, at, execution=execution, lease_until=at + 5)
            return replace(request, key=replace(KEY, journey_run_id=run), budgets=(budget,))

        # The caller's budget (1) goes to the lost reservation: its takeover is refused.
        assert (await store.begin_send(attempt("lost", now, "run-a"))).verdict is SendVerdict.RESERVED
        refused = await store.begin_send(attempt("refused", now + 6, "run-a"))
        assert refused.verdict is SendVerdict.BUDGET_TRIPPED
        other = await store.begin_send(replace(attempt("other", now + 7, "run-a", "y"), budgets=()))
        assert other.verdict is SendVerdict.TOO_SOON and 22.99 <= other.wait_seconds <= 23.01
        # Taken over, then nothing sent (Cognito throttled, say): the lost reservation is back.
        assert (await store.begin_send(_send("lost-b", now, execution="x", lease_until=now + 5))).verdict is (
            SendVerdict.RESERVED
        )
        takeover = _send("takeover", now + 6, execution="x", lease_until=now + 11)
        assert (await store.begin_send(takeover)).took_over
        await store.finish_send(takeover, SendResult.NOT_SENT, None)
        other = await store.begin_send(_send("other-b", now + 7, execution="y"))
        assert other.verdict is SendVerdict.TOO_SOON and 22.99 <= other.wait_seconds <= 23.01
        assert await store.events("demo", SENDS) == 2  # the lost codes, counted; nothing else
        again = await store.begin_send(_send("again", now + 8, execution="x", lease_until=now + 13))
        assert again.verdict is SendVerdict.RESERVED and again.took_over

    run(make_store, scenario)


def test_a_reservation_without_a_lease_is_held_for_the_reservation_window(make_store: StoreFactory) -> None:
    async def scenario(store: ChallengeStore) -> None:
        # As an earlier version made them (no lease): held RESERVATION_SECONDS, then taken over.
        now = time.time()
        assert (
            await store.begin_send(_send("a", now, execution="x", ttl=600))
        ).verdict is SendVerdict.RESERVED
        assert (await store.begin_send(_send("b", now + 60, execution="x"))).verdict is SendVerdict.IN_FLIGHT
        taken = await store.begin_send(_send("c", now + 121, execution="x"))
        assert taken.verdict is SendVerdict.RESERVED and taken.took_over

    run(make_store, scenario)


def test_the_connections_budget_trips_across_identifiers_and_gives_back_unsent_codes(
    make_store: StoreFactory,
) -> None:
    async def scenario(store: ChallengeStore) -> None:
        now = time.time()
        breaker = SendBudget("budget:demo:60", 2, 60)
        verdicts, requests = [], []
        for i in range(3):
            request = replace(
                _send(f"n{i}", now),
                key=ChallengeKey("demo", f"run-{i}", f"user{i}"),
                sends_subject=f"sends:{i}",
                budgets=(breaker,),
            )
            requests.append(request)
            verdicts.append((await store.begin_send(request)).verdict)
        assert verdicts == [SendVerdict.RESERVED, SendVerdict.RESERVED, SendVerdict.BUDGET_TRIPPED]
        # A reservation that certainly sent nothing gives its share of the budget back.
        await store.finish_send(requests[0], SendResult.NOT_SENT, None)
        assert await store.events("demo", breaker.subject) == 1

    run(make_store, scenario)


def test_a_callers_budget_spans_its_connections_and_a_tripped_one_holds_nothing(
    make_store: StoreFactory,
) -> None:
    async def scenario(store: ChallengeStore) -> None:
        now = time.time()
        budget = SendBudget(caller_budget_subject("journeys", 60), 2, 60)
        requests = [
            replace(
                _send(f"n{i}", now),
                key=ChallengeKey(connection, f"run-{i}", "ada"),
                sends_subject=f"sends:{i}",
                budgets=(budget,),
            )
            for i, connection in enumerate(["demo", "other", "third"])
        ]
        verdicts = [(await store.begin_send(request)).verdict for request in requests]
        assert verdicts == [SendVerdict.RESERVED, SendVerdict.RESERVED, SendVerdict.BUDGET_TRIPPED]
        assert await store.events("", budget.subject) == 2
        # The tripped send counted nothing and holds no key: its identifier's counter is untouched...
        assert await store.events("third", "sends:2") == 0
        assert await store.load(requests[2].key) is None
        # ...and an unsent code gives the caller's budget back, whichever connection it went through.
        await store.finish_send(requests[1], SendResult.NOT_SENT, None)
        assert await store.events("", budget.subject) == 1
        assert (
            await store.begin_send(
                replace(requests[2], placeholder=replace(requests[2].placeholder, nonce="again"))
            )
        ).verdict is SendVerdict.RESERVED

    run(make_store, scenario)


def test_an_unsent_code_gives_back_its_own_reservations_counts_once_and_nothing_else(
    make_store: StoreFactory,
) -> None:
    """NOT_SENT gives back what its reservation counted, while the key holds that reservation: made again (a
    settle whose reply was lost), or made for a reservation whose script may never have run (the reply of
    begin_send lost), it must not give back another code's counts."""

    async def scenario(store: ChallengeStore) -> None:
        now = time.time()
        budget = SendBudget(caller_budget_subject("journeys", 60), 10, 60)

        def request(nonce: str, run: str) -> SendRequest:
            return replace(_send(nonce, now), key=replace(KEY, journey_run_id=run), budgets=(budget,))

        async def counts() -> tuple[int, int]:
            return await store.events("demo", SENDS), await store.events("", budget.subject)

        delivered = request("sent", "run-a")
        assert (await store.begin_send(delivered)).verdict is SendVerdict.RESERVED
        await store.finish_send(delivered, SendResult.SENT, _challenge(nonce="sent", sent_at=now))
        unsent = request("unsent", "run-b")
        assert (await store.begin_send(unsent)).verdict is SendVerdict.RESERVED
        assert await counts() == (2, 2)
        for _ in range(2):
            await store.finish_send(unsent, SendResult.NOT_SENT, None)
            assert await counts() == (1, 1)
        never_made = request("never-made", "run-c")
        await store.finish_send(never_made, SendResult.NOT_SENT, None)
        await store.finish_send(replace(never_made, key=delivered.key), SendResult.NOT_SENT, None)
        assert await counts() == (1, 1)
        assert await store.load(delivered.key) is not None  # the delivered code's challenge is untouched

    run(make_store, scenario)


def test_the_send_budget_is_spent_across_journeys(make_store: StoreFactory) -> None:
    async def scenario(store: ChallengeStore) -> None:
        now = time.time()
        verdicts = []
        for i in range(4):
            request = replace(_send(f"n{i}", now, limit=3), key=ChallengeKey("demo", f"run-{i}", "ada"))
            verdicts.append((await store.begin_send(request)).verdict)
        assert verdicts == [SendVerdict.RESERVED] * 3 + [SendVerdict.OVER_BUDGET]

    run(make_store, scenario)


def test_a_locked_identifier_gets_no_code(make_store: StoreFactory) -> None:
    async def scenario(store: ChallengeStore) -> None:
        await _saved(store, _challenge())
        for _ in range(3):
            await store.begin_attempt(_attempt())
        assert (await store.begin_send(_send("late", time.time() + 1))).verdict is SendVerdict.LOCKED

    run(make_store, scenario)


# --- Counters per Cognito user (aliases) -----------------------------------------------------------------

ALIAS = "alias:ada-email"


def _aliased(nonce: str, run: str, now: float | None = None, **changes: Any) -> SendRequest:
    """A send through ALIAS (the identifier's entry in the map of which user it reached), in journey `run`."""
    request = _send(nonce, now, execution=nonce)
    return replace(
        request,
        key=ChallengeKey("demo", run, "ada@example.com"),
        alias_subject=ALIAS,
        alias_seconds=60,
        **changes,
    )


async def _sent_to(store: ChallengeStore, request: SendRequest, user: str) -> None:
    assert (await store.begin_send(request)).verdict is SendVerdict.RESERVED
    challenge = replace(request.placeholder, pending=False, session="s", user=user)
    await store.finish_send(request, SendResult.SENT, challenge)


def test_a_users_sends_are_counted_once_its_alias_is_known_and_given_back_when_not_sent(
    make_store: StoreFactory,
) -> None:
    async def scenario(store: ChallengeStore) -> None:
        await _sent_to(store, _aliased("a", "run-a"), "U")  # unknown at begin: counted for U afterwards
        assert await store.events("demo", USER_SENDS + "U") == 1
        second = _aliased("b", "run-b")
        assert (await store.begin_send(second)).verdict is SendVerdict.RESERVED  # known: counted up front
        assert await store.events("demo", USER_SENDS + "U") == 2
        await store.finish_send(second, SendResult.NOT_SENT, None)
        assert await store.events("demo", USER_SENDS + "U") == 1
        assert await store.events("demo", SENDS) == 1

    run(make_store, scenario)


def test_a_fresh_alias_sends_one_code_at_a_time(make_store: StoreFactory) -> None:
    async def scenario(store: ChallengeStore) -> None:
        first = _aliased("a", "run-a")
        assert (await store.begin_send(first)).verdict is SendVerdict.RESERVED
        meanwhile = await store.begin_send(_aliased("b", "run-b"))
        assert meanwhile.verdict is SendVerdict.TOO_SOON and meanwhile.wait_seconds == 1
        await store.finish_send(first, SendResult.SENT, replace(first.placeholder, pending=False, user="U"))
        assert (await store.begin_send(_aliased("c", "run-c"))).verdict is SendVerdict.RESERVED

    run(make_store, scenario)


def test_a_fresh_alias_held_by_a_lost_reservation_is_freed_for_its_execution_only(
    make_store: StoreFactory,
) -> None:
    def attempt(nonce: str, run: str, at: float, execution: str) -> SendRequest:
        request = _aliased(nonce, run, at)
        placeholder = replace(request.placeholder, step_execution_id=execution, lease_until=at + 5)
        return replace(request, placeholder=placeholder)

    async def scenario(store: ChallengeStore) -> None:
        now = time.time()
        assert (await store.begin_send(attempt("a", "run-a", now, "x"))).verdict is SendVerdict.RESERVED
        # The identifier's user is unknown while its first code is on its way: other journeys wait...
        other = await store.begin_send(attempt("b", "run-b", now + 1, "y"))
        assert other.verdict is SendVerdict.TOO_SOON and other.wait_seconds == 1
        # ...and when that send is lost with its instance, its own execution takes the hold over.
        taken = await store.begin_send(attempt("c", "run-a", now + 6, "x"))
        assert taken.verdict is SendVerdict.RESERVED and taken.took_over
        still = await store.begin_send(attempt("d", "run-b", now + 6, "y"))
        assert still.verdict is SendVerdict.TOO_SOON  # held by the takeover now

    run(make_store, scenario)


def test_a_slow_attempt_that_settles_after_its_takeover_writes_nothing(make_store: StoreFactory) -> None:
    """An attempt outlives its lease (a slow instance, not a dead one), a retry of its execution takes the
    reservation over, and then the slow one settles: it writes nothing, neither the identifier's user nor a
    send for them (the takeover counts and records the execution's send). Before, it recorded the user and
    counted the send for them, and the takeover's settle counted it again."""

    def attempt(nonce: str, at: float) -> SendRequest:
        request = _aliased(nonce, "run-a", at)
        placeholder = replace(request.placeholder, step_execution_id="x", lease_until=at + 5)
        return replace(request, placeholder=placeholder)

    async def scenario(store: ChallengeStore) -> None:
        now = time.time()
        slow, takeover = attempt("slow", now), attempt("takeover", now + 6)
        assert (await store.begin_send(slow)).verdict is SendVerdict.RESERVED
        taken = await store.begin_send(takeover)
        assert taken.verdict is SendVerdict.RESERVED and taken.took_over
        await store.finish_send(slow, SendResult.SENT, replace(slow.placeholder, pending=False, user="U"))
        assert await store.events("demo", USER_SENDS + "U") == 0
        # The identifier's user is still unknown: its first code (the takeover's) is still on its way.
        other = await store.begin_send(_aliased("other", "run-b", now + 7))
        assert other.verdict is SendVerdict.TOO_SOON and other.wait_seconds == 1
        await store.finish_send(
            takeover, SendResult.SENT, replace(takeover.placeholder, pending=False, user="U")
        )
        assert await store.events("demo", USER_SENDS + "U") == 1
        replay = await store.begin_send(attempt("retry", now + 8))
        assert replay.verdict is SendVerdict.REPLAY
        assert replay.challenge is not None and replay.challenge.nonce == "takeover"

    run(make_store, scenario)


def test_codes_lost_through_a_fresh_alias_are_bounded_then_counted_for_its_user(
    make_store: StoreFactory,
) -> None:
    async def lose(store: ChallengeStore, request: SendRequest) -> None:
        """A send Cognito may have made, whose answer never named the user (a timeout, a cancelled call)."""
        assert (await store.begin_send(request)).verdict is SendVerdict.RESERVED
        unusable = replace(request.placeholder, pending=False, unusable=True)
        await store.finish_send(request, SendResult.LOST, unusable)

    async def scenario(store: ChallengeStore) -> None:
        # Cognito's own failures (MAYBE_SENT: a 5xx, its slowness) never hold the identifier...
        for nonce in ("x", "y", "z"):
            request = _aliased(nonce, f"run-{nonce}")
            assert (await store.begin_send(request)).verdict is SendVerdict.RESERVED
            unusable = replace(request.placeholder, pending=False, unusable=True)
            await store.finish_send(request, SendResult.MAYBE_SENT, unusable)
        # ...answers the caller cut off (LOST) do, after MAX_UNRESOLVED_SENDS of them.
        for nonce in ("a", "b"):
            await lose(store, _aliased(nonce, f"run-{nonce}"))
        held = await store.begin_send(_aliased("c", "run-c"))
        assert held.verdict is SendVerdict.TOO_SOON and held.wait_seconds > 1  # until the window ends
        # Another fresh alias loses one answer, then the next one names the user: both codes count for them.
        phone = "alias:ada-phone"
        await lose(store, replace(_aliased("d", "run-d"), alias_subject=phone))
        await _sent_to(store, replace(_aliased("e", "run-e"), alias_subject=phone), "U")
        assert await store.events("demo", USER_SENDS + "U") == 2

    run(make_store, scenario)


def test_a_lost_codes_settle_made_again_counts_it_once(make_store: StoreFactory) -> None:
    """A LOST settle whose reply was lost (or whose WAIT fell short) is made again (steps/settling.py), and
    such a settle changes nothing twice: the code counts once beside the alias. Before, each run counted it,
    so one lost code settled twice reached MAX_UNRESOLVED_SENDS and the identifier sent nothing more for the
    send window."""

    async def scenario(store: ChallengeStore) -> None:
        request = _aliased("a", "run-a")
        assert (await store.begin_send(request)).verdict is SendVerdict.RESERVED
        unusable = replace(request.placeholder, pending=False, unusable=True, step_execution_id="")
        for _ in range(3):
            await store.finish_send(request, SendResult.LOST, unusable)
            assert await store.events("demo", ALIAS + ":unresolved") == 1
        assert (await store.begin_send(_aliased("b", "run-b"))).verdict is SendVerdict.RESERVED

    run(make_store, scenario)


def test_a_users_wrong_codes_are_counted_and_given_back_with_the_identifiers(
    make_store: StoreFactory,
) -> None:
    async def scenario(store: ChallengeStore) -> None:
        await _saved(store, _challenge(user="U"))
        subjects = (FAILURES, USER_FAILURES + "U")
        assert (await store.begin_attempt(_attempt(threshold=2))).verdict is AttemptVerdict.GRANTED
        assert await store.events("demo", USER_FAILURES + "U") == 1
        await store.finish_attempt(KEY, "n1", Judgement.UNJUDGED, subjects)
        assert await store.events("demo", USER_FAILURES + "U") == await store.events("demo", FAILURES) == 0
        for _ in range(2):
            assert (await store.begin_attempt(_attempt(threshold=2))).verdict is AttemptVerdict.GRANTED
        # Another identifier's challenge for the same user: the user is locked, though that identifier is not.
        other = replace(
            _attempt(threshold=2),
            key=ChallengeKey("demo", "run-2", "+15555550100"),
            lockout_subject="failures:phone",
        )
        request = replace(_send("p"), key=other.key)
        assert (await store.begin_send(request)).verdict is SendVerdict.RESERVED
        await store.finish_send(request, SendResult.SENT, _challenge(nonce="p", user="U"))
        assert (await store.begin_attempt(other)).verdict is AttemptVerdict.LOCKED
        assert await store.events("demo", "failures:phone") == 0  # a locked user touches nothing

    run(make_store, scenario)


def test_a_users_lockout_is_hidden_when_asked_and_the_attempt_spent_as_a_wrong_codes(
    make_store: StoreFactory,
) -> None:
    async def scenario(store: ChallengeStore) -> None:
        locked_user = replace(_attempt(threshold=2), lockout_subject="failures:phone", hide_user_lockout=True)
        for run_id in ("run-1", "run-2"):  # the user's two wrong codes, through another identifier
            await _saved(store, _challenge(user="U"))
            assert (await store.begin_attempt(_attempt(threshold=2))).verdict is AttemptVerdict.GRANTED
            if run_id == "run-1":
                await store.finish_attempt(KEY, "n1", Judgement.RIGHT, (FAILURES,))  # only the user's stays
        key = ChallengeKey("demo", "run-3", "+15555550100")
        request = replace(_send("p"), key=key, lockout_subject="failures:phone")
        assert (await store.begin_send(request)).verdict is SendVerdict.RESERVED
        await store.finish_send(request, SendResult.SENT, _challenge(nonce="p", user="U", max_attempts=1))
        grants = [await store.begin_attempt(replace(locked_user, key=key)) for _ in range(2)]
        # As for a user who is not locked: an attempt spent, then none left.
        assert [g.verdict for g in grants] == [AttemptVerdict.USER_LOCKED, AttemptVerdict.EXHAUSTED]
        assert grants[0].challenge is not None and grants[0].challenge.attempts_remaining == 0
        assert await store.events("demo", "failures:phone") == 1  # counted as a wrong code is
        assert await store.events("demo", USER_FAILURES + "U") == 2  # the user's lockout, unchanged

    run(make_store, scenario)


def test_a_decoy_never_takes_an_alias_away_from_its_user(make_store: StoreFactory) -> None:
    async def decoy(store: ChallengeStore, request: SendRequest, stand_in: str) -> None:
        assert (await store.begin_send(request)).verdict is SendVerdict.RESERVED
        challenge = replace(request.placeholder, pending=False, decoy=True, user=stand_in)
        await store.finish_send(request, SendResult.SENT, challenge)

    async def scenario(store: ChallengeStore) -> None:
        # An alias nobody's code went through yet: a decoy maps it to the user it stands in for...
        await decoy(store, _aliased("a", "run-a"), "S")
        assert (await store.begin_send(_aliased("b", "run-b"))).verdict is SendVerdict.RESERVED
        assert await store.events("demo", USER_SENDS + "S") == 2
        # ...until a real answer names the user; from then on decoys leave the alias to that user.
        await store.finish_send(
            _aliased("b", "run-b"), SendResult.SENT, replace(_aliased("b", "run-b").placeholder, user="U")
        )
        await decoy(store, _aliased("c", "run-c"), "S")
        assert (await store.begin_send(_aliased("d", "run-d"))).verdict is SendVerdict.RESERVED
        assert await store.events("demo", USER_SENDS + "U") == 3  # b, the decoy c, d: all counted for U
        assert await store.events("demo", USER_SENDS + "S") == 2

    run(make_store, scenario)


@contextmanager
def lagging(cluster: Cluster, primary: RedisNode) -> Iterator[None]:
    """The primary's replica stopped (SIGSTOP) for the block: it acknowledges nothing, so WAIT falls short.
    Kept well under the cluster's 1 s node timeout."""
    port = int(primary.client().info("replication")["slave0"]["port"])
    replica = next(node for node in cluster.nodes if node.port == port)
    assert replica.process is not None
    replica.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        replica.process.send_signal(signal.SIGCONT)


def test_counts_a_lagging_replica_does_not_hold_are_given_back(
    redis_cluster: Cluster, keys_file: Path
) -> None:
    """A script counted, but WAIT found no replica holding it: a failover could forget the count, so nothing
    is sent or judged on it, and the store gives back what it took: the connection's reservation, a caller's
    budgets (taken by a script of their own, on another primary), an attempt."""
    from otp_step_service.adapters.redis_store import connection_tag

    budget = SendBudget(caller_budget_subject("journeys", 60), 5, 60)
    budgets_on = redis_cluster.primary_of("{" + caller_scope(budget.subject) + "}")
    connection = next(
        name
        for name in (f"conn-{i}" for i in range(64))
        if redis_cluster.primary_of(connection_tag(name)).port != budgets_on.port
    )
    connection_on = redis_cluster.primary_of(connection_tag(connection))
    redis_cluster.flush()
    sealer = SessionSealer.from_file(keys_file)

    def request(nonce: str, run: str) -> SendRequest:
        return replace(_send(nonce), key=ChallengeKey(connection, run, "ada@example.com"), budgets=(budget,))

    async def scenario() -> None:
        store = redis_challenge_store(redis_cluster.url, sealer, min_replicas=1)
        try:
            with lagging(redis_cluster, budgets_on), pytest.raises(ChallengeStoreError, match="WAIT"):
                await store.begin_send(request("a", "run-1"))
            assert await store.events("", budget.subject) == 0
            assert await store.events(connection, SENDS) == 0
            with lagging(redis_cluster, connection_on), pytest.raises(ChallengeStoreError, match="WAIT"):
                await store.begin_send(request("b", "run-1"))
            assert await store.events(connection, SENDS) == 0
            sent = request("c", "run-1")  # the key is free: nothing of either reservation holds it
            assert (await store.begin_send(sent)).verdict is SendVerdict.RESERVED
            await store.finish_send(sent, SendResult.SENT, _challenge(nonce="c"))
            attempt = replace(_attempt(), key=sent.key)
            with lagging(redis_cluster, connection_on), pytest.raises(ChallengeStoreError, match="WAIT"):
                await store.begin_attempt(attempt)
            assert await store.events(connection, FAILURES) == 0
            grant = await store.begin_attempt(attempt)
            assert grant.challenge is not None and grant.challenge.attempts_used == 1
        finally:
            await store.aclose()

    asyncio.run(scenario())


def test_the_memory_store_forgets_expired_challenges_by_itself() -> None:
    clock = FakeClock(1000.0)

    async def scenario() -> None:
        store = InMemoryChallengeStore(clock)
        for i in range(100):
            key = ChallengeKey("demo", f"run-{i}", "ada@example.com")
            challenge = Challenge("ada", "s", Channel.EMAIL, "m", 1010.0, 3, nonce=f"n{i}", sent_at=1000.0)
            request = replace(
                _send(f"n{i}", 1000.0, limit=1000), key=key, placeholder=replace(challenge, pending=True)
            )
            assert (await store.begin_send(request)).verdict is SendVerdict.RESERVED
            await store.finish_send(request, SendResult.SENT, challenge)
        assert len(store) == 101  # the challenges and the send counter
        clock.wall = 1011.0
        assert len(store) == 101  # expired, but kept a grace period so Validate can still say "expired"
        clock.wall = 1011.0 + EXPIRED_GRACE_SECONDS
        assert len(store) == 0

    asyncio.run(scenario())


def test_instances_sharing_redis_validate_each_others_challenges(
    connections_file: Path, redis_url: str, emulator: Emulator, keys_file: Path
) -> None:
    first = build_service(connections_file, challenge_store=redis_url, challenge_keys_file=str(keys_file))
    second = build_service(connections_file, challenge_store=redis_url, challenge_keys_file=str(keys_file))
    first.start()
    second.start()
    try:
        with (
            StepExecutorClient(f"127.0.0.1:{first.port}") as a,
            StepExecutorClient(f"127.0.0.1:{second.port}") as b,
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
        first.stop(1)
        second.stop(1)


def _rejected(service: RunningService) -> dict[str, float]:
    """`otp_rejected_calls_total` by reason, scraped from the service's metrics endpoint."""
    assert service.service.metrics is not None
    url = f"http://127.0.0.1:{service.service.metrics.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "otp_rejected_calls_total"
    }


def test_an_unreachable_store_refuses_the_step_with_a_retryable_unavailable(
    connections_file: Path, emulator: Emulator, keys_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="otp_step_service.steps")
    closed = free_port()
    service = build_service(
        connections_file,
        challenge_store=f"redis://127.0.0.1:{closed}/0",
        challenge_keys_file=str(keys_file),
        metrics_listen=f"127.0.0.1:{free_port()}",
    )
    service.start()
    try:
        with StepExecutorClient(f"127.0.0.1:{service.port}") as client:
            journeys = Journeys(client, emulator)
            before = len(emulator.outbox("ada@example.com"))
            with pytest.raises(UnavailableError) as generate:
                journeys.generate("ada@example.com")
            with pytest.raises(UnavailableError) as validate:
                journeys.validate(journeys.journey(), "ada@example.com", "12345678")
        rejected = _rejected(service)
    finally:
        service.stop(1)
    for refused in (generate.value, validate.value):
        assert (refused.reason, refused.domain, refused.retryable) == (
            "CHALLENGE_STORE_UNAVAILABLE",
            "stepexecutor.v1",
            True,
        )
        assert refused.retry_after is not None and 0 < refused.retry_after <= 1
    assert len(emulator.outbox("ada@example.com")) == before  # the step did not run: nothing was sent
    # The client's service config retried GenerateOtp by itself (each attempt refused); ValidateOtp once.
    attempts = SERVICE_CONFIG["methodConfig"][0]["retryPolicy"]["maxAttempts"]  # type: ignore[index]
    assert rejected["CHALLENGE_STORE_UNAVAILABLE"] == attempts + 1
    logged = [r.step for r in caplog.records if r.getMessage() == "step.completed"]  # type: ignore[attr-defined]
    assert [(s["outcome"], s["failure_code"]) for s in logged] == [
        ("refused", "CHALLENGE_STORE_UNAVAILABLE")
    ] * (attempts + 1)


def test_a_store_failing_for_a_moment_costs_the_journey_nothing(
    connections_file: Path, emulator: Emulator, redis_url: str, keys_file: Path
) -> None:
    service = build_service(connections_file, challenge_store=redis_url, challenge_keys_file=str(keys_file))
    # Before Cognito is asked, the client's retry makes the call again; after, the service writes the record
    # again. Either way the journey sees one success and one code.
    failing = FailingStore(service.store.inner, begin_send=1, finish_send=2)
    service.store.inner = failing
    service.start()
    try:
        with StepExecutorClient(f"127.0.0.1:{service.port}") as client:
            journeys = Journeys(client, emulator)
            before = len(emulator.outbox("grace@example.com"))
            sent, journey = journeys.generate("grace@example.com")
            assert sent.WhichOneof("outcome") == "success", sent
            assert len(emulator.outbox("grace@example.com")) == before + 1
            code = emulator.latest_code("grace@example.com", after=before)
            assert journeys.validate(journey, "grace@example.com", code).WhichOneof("outcome") == "success"
            assert (failing.calls["begin_send"], failing.calls["finish_send"]) == (2, 3)
            # A store down for longer than the deadline after the code went out: the step ran, so it answers
            # with its failure outcome (OK status), having tried within the deadline.
            failing.failures["finish_send"] = 1000
        with StepExecutorClient(f"127.0.0.1:{service.port}", timeout=1.5) as impatient:
            started = time.monotonic()
            response, _ = Journeys(impatient, emulator).generate("grace@example.com")
            assert time.monotonic() - started < 1.5
    finally:
        service.stop(1)
    assert response.failure.code == pb.FAILURE_CODE_CHALLENGE_STORE_UNAVAILABLE
    assert response.failure.retryable
    assert failing.calls["finish_send"] > 4


def test_redis_holds_no_session_or_username_in_clear_and_keys_rotate(redis_url: str, tmp_path: Path) -> None:
    old_line, new_line = SessionSealer.new_key_line("old"), SessionSealer.new_key_line("new")

    async def scenario() -> None:
        client = redis.Redis.from_url(redis_url)
        before = SessionSealer([_parse(old_line)])
        store = redis_challenge_store(redis_url, before)
        challenge = _challenge(nonce="n1")
        await _saved(store, challenge)
        raw = b"".join(client.get(k) or b"" for k in client.keys("otp-steps:*challenge:*"))
        assert raw and b"session-xyz" not in raw and b'"ada"' not in raw
        await store.aclose()
        # Rotation: the new key seals from now on, the old one still opens what it sealed.
        rotated = redis_challenge_store(redis_url, SessionSealer([_parse(new_line), _parse(old_line)]))
        grant = await rotated.begin_attempt(_attempt())
        assert grant.challenge is not None and grant.challenge.session == "session-xyz"
        await rotated.aclose()
        # Without the old key, the challenge does not open: a store failure, never a session in clear. The
        # step is refused as not run, so the attempt its script spent is given back with its wrong-code count,
        # however often it is made again (before, each spent one: the third found the challenge exhausted).
        lost = redis_challenge_store(redis_url, SessionSealer([_parse(new_line)]))
        for _ in range(3):
            with pytest.raises(ChallengeStoreError, match="key id 'old'"):
                await lost.begin_attempt(_attempt())
        assert await lost.events("demo", FAILURES) == 1  # the one the rotated store's grant spent
        await lost.aclose()
        reopened = redis_challenge_store(redis_url, SessionSealer([_parse(new_line), _parse(old_line)]))
        grant = await reopened.begin_attempt(_attempt())
        assert grant.challenge is not None and grant.challenge.attempts_remaining == 1
        await reopened.aclose()

    redis.Redis.from_url(redis_url).flushdb()
    asyncio.run(scenario())


def test_a_sealed_session_cannot_be_moved_to_another_challenge(keys_file: Path) -> None:
    sealer = SessionSealer.from_file(keys_file)
    sealed = sealer.seal("session-xyz", "challenge:aaa")
    assert sealer.open(sealed, "challenge:aaa") == "session-xyz"
    with pytest.raises(ChallengeStoreError):
        sealer.open(sealed, "challenge:bbb")


def _parse(line: str) -> tuple[str, bytes]:
    import base64

    kid, _, encoded = line.partition(" ")
    return kid, base64.b64decode(encoded)
