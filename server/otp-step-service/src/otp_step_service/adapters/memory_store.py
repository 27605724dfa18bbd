"""The in-process challenge store: one service instance, state lost on restart.

Expired challenges and stale failure windows leave the store on their own (a heap ordered by expiry is swept on
every write), so memory stays flat under load however many journeys never come back to Validate.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from otp_step_service.steps.challenges import (
    AttemptGrant,
    AttemptVerdict,
    Challenge,
    ChallengeKey,
    Reservation,
    ReservationVerdict,
)


class InMemoryChallengeStore:
    """ChallengeStore in a dict guarded by one lock (operations are tiny; contention is negligible)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._challenges: dict[str, Challenge] = {}
        self._failures: dict[str, tuple[int, float]] = {}  # subject -> (count, window end)
        self._expiry: list[tuple[float, str]] = []  # (expires_at, storage key), lazily cleaned

    def save(self, key: ChallengeKey, challenge: Challenge) -> None:
        """Store the challenge until its expiry."""
        skey = key.storage_key()
        with self._lock:
            self._sweep(self._clock())
            self._challenges[skey] = challenge
            heapq.heappush(self._expiry, (challenge.forget_at, skey))

    def load(self, key: ChallengeKey) -> Challenge | None:
        """The live challenge, if any."""
        with self._lock:
            challenge = self._challenges.get(key.storage_key())
        if challenge is None or challenge.pending or challenge.expires_at <= self._clock():
            return None
        return challenge

    def reserve(
        self, key: ChallengeKey, placeholder: Challenge, now: float, cooldown_seconds: float
    ) -> Reservation:
        """Decide and hold the key, atomically."""
        skey = key.storage_key()
        with self._lock:
            existing = self._challenges.get(skey)
            if existing is not None and existing.expires_at > now:
                same_execution = bool(placeholder.step_execution_id) and (
                    existing.step_execution_id == placeholder.step_execution_id
                )
                if same_execution and not existing.pending:
                    return Reservation(ReservationVerdict.REPLAY, existing)
                wait = existing.sent_at + cooldown_seconds - now
                if same_execution or wait > 0:
                    return Reservation(ReservationVerdict.TOO_SOON, wait_seconds=max(wait, 1.0))
            self._sweep(now)
            self._challenges[skey] = placeholder
            heapq.heappush(self._expiry, (placeholder.forget_at, skey))
            return Reservation(ReservationVerdict.RESERVED)

    def begin_attempt(self, key: ChallengeKey, now: float) -> AttemptGrant:
        """Spend one attempt atomically."""
        skey = key.storage_key()
        with self._lock:
            challenge = self._challenges.get(skey)
            if challenge is None or challenge.pending:
                return AttemptGrant(AttemptVerdict.NOT_FOUND)
            if challenge.expires_at <= now:
                del self._challenges[skey]
                return AttemptGrant(AttemptVerdict.EXPIRED)
            if challenge.attempts_remaining <= 0:
                del self._challenges[skey]
                return AttemptGrant(AttemptVerdict.EXHAUSTED)
            spent = challenge.with_attempt()
            self._challenges[skey] = spent
            return AttemptGrant(AttemptVerdict.GRANTED, spent)

    def refund_attempt(self, key: ChallengeKey, nonce: str) -> None:
        """Give one attempt back to the challenge `nonce`."""
        skey = key.storage_key()
        with self._lock:
            challenge = self._challenges.get(skey)
            if challenge is not None and challenge.nonce == nonce and challenge.attempts_used > 0:
                self._challenges[skey] = replace(challenge, attempts_used=challenge.attempts_used - 1)

    def discard(self, key: ChallengeKey, nonce: str) -> None:
        """Remove the challenge `nonce`."""
        skey = key.storage_key()
        with self._lock:
            challenge = self._challenges.get(skey)
            if challenge is not None and challenge.nonce == nonce:
                del self._challenges[skey]

    def count_event(self, subject: str, window_seconds: int) -> int:
        """Count a failed code in a fixed window that starts with the first failure."""
        now = self._clock()
        with self._lock:
            count, ends = self._failures.get(subject, (0, 0.0))
            if ends <= now:
                count, ends = 0, now + window_seconds
                heapq.heappush(self._expiry, (ends, subject))
            self._failures[subject] = (count + 1, ends)
            return count + 1

    def uncount_event(self, subject: str) -> None:
        """Take one failure back."""
        with self._lock:
            count, ends = self._failures.get(subject, (0, 0.0))
            if count > 0:
                self._failures[subject] = (count - 1, ends)

    def events(self, subject: str) -> int:
        """Failed codes in the current window."""
        with self._lock:
            count, ends = self._failures.get(subject, (0, 0.0))
        return count if ends > self._clock() else 0

    def __len__(self) -> int:
        """Live entries (challenges and failure windows), for tests and memory checks."""
        with self._lock:
            self._sweep(self._clock())
            return len(self._challenges) + len(self._failures)

    def _sweep(self, now: float) -> None:
        # Caller holds the lock. An entry replaced with a later expiry has a stale heap item: it is checked
        # against the live value before anything is deleted.
        while self._expiry and self._expiry[0][0] <= now:
            _, skey = heapq.heappop(self._expiry)
            challenge = self._challenges.get(skey)
            if challenge is not None and challenge.forget_at <= now:
                del self._challenges[skey]
            window = self._failures.get(skey)
            if window is not None and window[1] <= now:
                del self._failures[skey]
