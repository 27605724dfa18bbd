"""The verified-token cache: never past exp (plus the leeway), never past its cap, never past its key."""

from __future__ import annotations

from harness import FakeClock
from otp_step_service.adapters.token_cache import VerifiedTokens

KEY = object()


def _current(key: object = KEY) -> dict[str, object]:
    return {"k1": key}


def test_a_verified_token_is_answered_from_the_cache_and_another_is_not() -> None:
    cache = VerifiedTokens(clock=FakeClock())
    cache.remember("token-a", "worker", "k1", KEY, accepted_until=FakeClock().now() + 60)
    assert cache.subject("token-a", _current().get) == "worker"
    assert cache.subject("token-b", _current().get) is None


def test_an_entry_is_never_accepted_once_a_fresh_verification_would_refuse_the_token() -> None:
    clock = FakeClock()
    cache = VerifiedTokens(clock=clock, max_age_seconds=300)
    cache.remember("token", "worker", "k1", KEY, accepted_until=clock.now() + 10)
    clock.advance(9.9)
    assert cache.subject("token", _current().get) == "worker"
    clock.advance(0.1)  # exactly at exp + leeway: refused, and forgotten
    assert cache.subject("token", _current().get) is None
    assert len(cache) == 0


def test_an_entry_lives_at_most_the_cap_even_for_a_long_lived_token() -> None:
    clock = FakeClock()
    cache = VerifiedTokens(clock=clock, max_age_seconds=300)
    cache.remember("token", "worker", "k1", KEY, accepted_until=clock.now() + 86_400)
    clock.advance(299)
    assert cache.subject("token", _current().get) == "worker"
    clock.advance(1)
    assert cache.subject("token", _current().get) is None


def test_an_entry_dies_when_its_key_is_no_longer_the_published_one() -> None:
    clock = FakeClock()
    cache = VerifiedTokens(clock=clock)
    cache.remember("token", "worker", "k1", KEY, accepted_until=clock.now() + 60)
    assert cache.subject("token", _current(object()).get) is None  # same kid, another key
    cache.remember("token", "worker", "k1", KEY, accepted_until=clock.now() + 60)
    assert cache.subject("token", {}.get) is None  # the kid left the key set


def test_the_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    clock = FakeClock()
    cache = VerifiedTokens(clock=clock, max_entries=2)
    for token in ("a", "b"):
        cache.remember(token, token.upper(), "k1", KEY, accepted_until=clock.now() + 60)
    assert cache.subject("a", _current().get) == "A"  # a is now the most recent
    cache.remember("c", "C", "k1", KEY, accepted_until=clock.now() + 60)
    assert len(cache) == 2
    assert cache.subject("b", _current().get) is None
    assert cache.subject("a", _current().get) == "A" and cache.subject("c", _current().get) == "C"


def test_an_already_expired_verification_or_a_zero_cap_keeps_nothing() -> None:
    clock = FakeClock()
    cache = VerifiedTokens(clock=clock)
    cache.remember("token", "worker", "k1", KEY, accepted_until=clock.now())
    off = VerifiedTokens(clock=clock, max_age_seconds=0)
    off.remember("token", "worker", "k1", KEY, accepted_until=clock.now() + 60)
    assert len(cache) == len(off) == 0
