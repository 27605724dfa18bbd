"""The per-caller step rate: GCRA arithmetic, and both StepRate implementations keeping the same promises."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import redis
from harness import FakeClock, free_port
from otp_step_service.adapters.redis_connection import StoreSecrets, redis_client
from otp_step_service.adapters.redis_rate import RedisStepRate
from otp_step_service.config.store_url import parse_store_url
from otp_step_service.steps.errors import ChallengeStoreError
from otp_step_service.steps.step_rate import Gcra, InProcessStepRate, StepRate

# --- The arithmetic -------------------------------------------------------------------------------------------


def _burst(limit: Gcra, now: float, tat: float | None = None) -> tuple[int, float | None]:
    """Steps allowed at one instant, from `tat`; returns the count and the TAT left."""
    for allowed in range(1000):
        decision, tat = limit.take(tat, now)
        if not decision.allowed:
            return allowed, tat
    raise AssertionError("no limit")


@pytest.mark.parametrize(("rate", "burst"), [(50, 50), (2.5, 2), (1, 1), (0.5, 1), (0.1, 1)])
def test_an_idle_caller_gets_one_seconds_worth_at_once_and_at_least_one_step(rate: float, burst: int) -> None:
    assert _burst(Gcra.per_second(rate), now=1000.0)[0] == burst


def test_a_refused_step_says_how_long_until_the_next_and_then_it_is_allowed() -> None:
    limit = Gcra.per_second(50)
    _, tat = _burst(limit, now=1000.0)
    refused, unchanged = limit.take(tat, 1000.0)
    assert not refused.allowed and unchanged == tat  # a refusal spends nothing
    assert refused.retry_after_seconds == pytest.approx(0.02)
    assert not limit.take(tat, 1000.0 + 0.019)[0].allowed
    assert limit.take(tat, 1000.0 + 0.0201)[0].allowed


def test_the_rate_refills_steadily_and_an_idle_past_gives_no_more_than_one_burst() -> None:
    limit = Gcra.per_second(10)
    _, tat = _burst(limit, now=0.0)
    assert _burst(limit, now=0.5, tat=tat)[0] == 5  # half a second: half the rate back
    assert _burst(limit, now=3600.0, tat=tat)[0] == 10  # an hour idle: still one burst


def test_a_tat_ahead_of_a_lagging_clock_counts_as_ahead() -> None:
    # Instance B's clock is 0.5 s behind A's: the steps A took are not handed back to B.
    limit = Gcra.per_second(2)
    _, tat = _burst(limit, now=100.0)
    assert not limit.take(tat, 99.5)[0].allowed


# --- Both implementations -------------------------------------------------------------------------------------

RateFactory = Callable[[FakeClock], StepRate]


@pytest.fixture(params=["memory", "redis"])
def make_rate(request: pytest.FixtureRequest) -> RateFactory:
    """A factory (redis.asyncio binds to the event loop each test runs)."""
    if request.param == "memory":
        return InProcessStepRate
    url = request.getfixturevalue("redis_url")
    redis.Redis.from_url(url).flushdb()
    return lambda clock: RedisStepRate(redis_client(parse_store_url(url), StoreSecrets(), 8), clock=clock)


def _run(make_rate: RateFactory, scenario: Callable[[StepRate, FakeClock], Awaitable[None]]) -> None:
    async def main() -> None:
        clock = FakeClock()
        rate = make_rate(clock)
        try:
            await scenario(rate, clock)
        finally:
            await rate.aclose()

    asyncio.run(main())


def test_each_caller_has_its_own_allowance(make_rate: RateFactory) -> None:
    async def scenario(rate: StepRate, clock: FakeClock) -> None:
        noisy = [(await rate.take("caller:noisy", 3)).allowed for _ in range(5)]
        assert noisy == [True, True, True, False, False]
        assert (await rate.take("caller:quiet", 3)).allowed
        refused = await rate.take("caller:noisy", 3)
        assert refused.retry_after_seconds == pytest.approx(1 / 3, abs=1e-6)
        clock.advance(1 / 3 + 0.001)
        assert (await rate.take("caller:noisy", 3)).allowed
        assert not (await rate.take("caller:noisy", 3)).allowed

    _run(make_rate, scenario)


def test_the_shared_key_is_bounded_and_expires_when_the_caller_is_idle_again(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    name = "caller:" + "x" * 5000  # peer addresses and caller names have no length the key should follow

    async def scenario() -> None:
        rate = RedisStepRate(redis_client(parse_store_url(redis_url), StoreSecrets(), 8), clock=FakeClock())
        try:
            assert (await rate.take(name, 0.5)).allowed
        finally:
            await rate.aclose()

    asyncio.run(scenario())
    (key,) = client.keys("*")
    assert len(key) < 64 and b"xxxx" not in key
    assert 0 < client.pttl(key) <= 2000  # the TAT is 2 s ahead: then the key is gone and the burst is whole


def test_instances_on_one_redis_draw_on_one_allowance(redis_url: str) -> None:
    redis.Redis.from_url(redis_url).flushdb()

    async def scenario() -> None:
        clock = FakeClock()
        first, second = (
            RedisStepRate(redis_client(parse_store_url(redis_url), StoreSecrets(), 8), clock=clock),
            RedisStepRate(redis_client(parse_store_url(redis_url), StoreSecrets(), 8), clock=clock),
        )
        try:
            taken = [(await (first if i % 2 else second).take("caller:c", 4)).allowed for i in range(8)]
            assert taken.count(True) == 4
        finally:
            await first.aclose()
            await second.aclose()

    asyncio.run(scenario())


def test_an_unreachable_redis_is_a_store_failure_not_an_allowed_step() -> None:
    async def scenario() -> None:
        rate = RedisStepRate(
            redis_client(parse_store_url(f"redis://127.0.0.1:{free_port()}/0"), StoreSecrets(), 8)
        )
        try:
            with pytest.raises(ChallengeStoreError):
                await rate.take("caller:c", 10)
        finally:
            await rate.aclose()

    asyncio.run(scenario())


def test_the_in_process_table_forgets_idle_callers_when_full() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        rate = InProcessStepRate(clock, max_callers=3)
        for peer in ("a", "b", "c"):
            await rate.take(peer, 1)
        clock.advance(1.5)  # all three idle again
        await rate.take("d", 1)
        assert len(rate) == 1

    asyncio.run(scenario())
