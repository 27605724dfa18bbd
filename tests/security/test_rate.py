"""The per-caller step rate: a token bucket with one second's burst, and a table that stays bounded."""

from __future__ import annotations

import time

from otp_step_service.transport.auth import TokenBucket


def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(50)
    taken = sum(bucket.take() for _ in range(80))
    assert 50 <= taken < 55  # the burst, plus what refilled while the loop ran
    assert not bucket.idle
    deadline = time.monotonic() + 2
    while not bucket.take():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_a_slow_rate_still_allows_one_step() -> None:
    bucket = TokenBucket(0.5)
    assert bucket.take()
    assert not bucket.take()
