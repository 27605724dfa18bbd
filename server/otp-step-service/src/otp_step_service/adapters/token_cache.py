"""Bearer tokens already verified: a bounded LRU map from a token's SHA-256 to its subject.

A worker sends the same token on every call until it renews it, and verifying RS256 costs ~0.5 ms of the
loop each time. An entry saves that, and is accepted only while a fresh verification would accept the token:

- until `exp` plus the verification's own leeway, so the cache never accepts a token that verifying again
  would refuse (and never one past that);
- for at most `max_age_seconds` after it was verified, so whatever else a fresh verification would catch
  later (a key the issuer removed or replaced, a change of settings) takes effect within that bound;
- and only while the JWKS cache still holds the very key object it was verified with: when the key set is
  refetched without that key (or with another key under the same `kid`), its entries die at once.

Only successes are kept: a refused token is verified (and refused) again every time, so a flood of garbage
cannot fill the map and push out real callers. Keys are digests, not tokens, and nothing here is logged.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from otp_step_service.steps.clock import SYSTEM_CLOCK, Clock

MAX_ENTRIES = 10_000
MAX_AGE_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class _Entry:
    subject: str
    kid: str
    key: object  # the signing key it was verified with, compared by identity
    until: float  # wall-clock epoch seconds


class VerifiedTokens:
    """Verified tokens' subjects, by token digest (LRU, at most `max_entries`)."""

    def __init__(
        self,
        *,
        max_entries: int = MAX_ENTRIES,
        max_age_seconds: float = MAX_AGE_SECONDS,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._max = max_entries
        self._max_age = max_age_seconds
        self._clock = clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def subject(self, token: str, current_key: Callable[[str], object | None]) -> str | None:
        """The cached subject of `token`, if it is cached, live, and `current_key(kid)` is still the key it
        was verified with; None otherwise (a stale entry is dropped)."""
        digest = self._digest(token)
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry.until <= self._clock.now() or current_key(entry.kid) is not entry.key:
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return entry.subject

    def remember(self, token: str, subject: str, kid: str, key: object, accepted_until: float) -> None:
        """Keep a verification: `accepted_until` is when a fresh verification would start refusing the token
        (its exp plus the leeway); the entry lives until then or for max_age_seconds, whichever is first."""
        if self._max_age <= 0 or self._max <= 0:
            return
        until = min(accepted_until, self._clock.now() + self._max_age)
        if until <= self._clock.now():
            return
        digest = self._digest(token)
        self._entries[digest] = _Entry(subject, kid, key, until)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
