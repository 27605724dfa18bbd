"""Decoy destinations: the masked destination a Generate shows when no code can go out to a real one.

Under enumeration protection a user who does not exist (or lacks the asked channel) is answered as if a code
had been sent. When the identifier is itself the destination (an email by email, a phone by SMS) its own mask
is what Cognito would show. Across channels (an email identifier by SMS, a phone by email) the mask a real
user gets is that of another attribute, which nobody outside can compute: so the decoy's mask must not be
computable either, nor shaped differently from real ones.

So the mask is derived with a keyed function (HMAC-SHA-256 under a server secret: an outsider knowing this
code but not the key cannot predict it), stable per identifier (a retry shows the same mask, as a real user's
does), and drawn from the distribution of real masks: for a phone, as many stars as a mobile number of a
country the connection sends to has digits, then four uniform digits; for an email, the local part's and the
domain's initials weighted as real addresses' are (many "g" domains), every letter and digit possible.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from bisect import bisect_right
from functools import cache
from itertools import accumulate

import phonenumbers

from .identifiers import IdentifierKind, UserIdentifier
from .outcomes import Channel

DECOY_KEY_BYTES = 32

# Initials of email local parts (people's names dominate) and of mail domains (a few providers dominate),
# in relative weights [inferred from common name and provider statistics]. Every letter and digit keeps a
# weight, so no initial can only be real.
_LOCAL_WEIGHTS = dict(
    zip(
        "abcdefghijklmnopqrstuvwxyz",
        (96, 50, 70, 60, 40, 22, 30, 30, 18, 90, 52, 50, 90, 30, 12, 32, 3, 52, 82, 50, 4, 14, 20, 3, 6, 10),
        strict=True,
    )
) | {digit: 3 for digit in "0123456789"}
_DOMAIN_WEIGHTS = (
    {letter: 8 for letter in "abcdefghijklmnopqrstuvwxyz"}
    | {digit: 1 for digit in "0123456789"}
    | {"g": 340, "y": 70, "h": 70, "o": 60, "i": 40, "a": 50, "m": 45, "p": 20, "c": 25, "l": 18, "w": 15}
)
# Where the sending country is not known from the connection (sms_countries = "*", no default region).
_DEFAULT_REGION = "US"


class _Draws:
    """A deterministic stream of uniform draws from an HMAC of the identifier."""

    def __init__(self, key: bytes, message: bytes) -> None:
        self._key, self._message, self._block, self._pool = key, message, 0, b""

    def below(self, bound: int) -> int:
        """A uniform integer in [0, bound) (rejection sampling: no modulo bias)."""
        limit = (1 << 32) - (1 << 32) % bound
        while True:
            if len(self._pool) < 4:
                self._block += 1
                block = self._block.to_bytes(4, "big")
                self._pool += hmac.new(self._key, block + self._message, hashlib.sha256).digest()
            value, self._pool = int.from_bytes(self._pool[:4], "big"), self._pool[4:]
            if value < limit:
                return value % bound

    def weighted(self, weights: dict[str, int]) -> str:
        """One key of `weights`, drawn in proportion to its weight."""
        names, cumulative = _cumulative(tuple(weights.items()))
        return names[bisect_right(cumulative, self.below(cumulative[-1]))]


@cache
def _cumulative(items: tuple[tuple[str, int], ...]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    return tuple(name for name, _ in items), tuple(accumulate(weight for _, weight in items))


@cache
def _stars(region: str) -> int:
    """The stars of a masked mobile number of `region` (its E.164 length less "+" and the last four)."""
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    if example is None:
        example = phonenumbers.example_number(region)
    if example is None:
        return 7
    return len(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)) - 5


def sending_regions(sms_countries: tuple[str, ...], default_phone_region: str | None) -> tuple[str, ...]:
    """The countries a connection's real users' numbers most plausibly belong to."""
    named = tuple(sorted(c for c in sms_countries if c != "*"))
    if named:
        return named
    return (default_phone_region or _DEFAULT_REGION,)


class DecoyMasks:
    """Keyed, stable, real-looking masked destinations for decoy challenges."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a decoy key needs at least 16 bytes")
        self._key = key

    @classmethod
    def ephemeral(cls) -> DecoyMasks:
        """A key of this process only (one instance, its in-memory store): masks change on restart."""
        return cls(os.urandom(DECOY_KEY_BYTES))

    def destination(self, identifier: UserIdentifier, channel: Channel, regions: tuple[str, ...]) -> str:
        """The mask a decoy challenge for `identifier` by `channel` shows."""
        if (identifier.kind is IdentifierKind.EMAIL) == (channel is Channel.EMAIL):
            return identifier.masked  # the identifier is the destination: exactly what Cognito shows
        draws = _Draws(self._key, f"{channel.value}\x00{identifier.value}".encode())
        if channel is Channel.SMS:
            region = regions[draws.below(len(regions))] if regions else _DEFAULT_REGION
            return f"+{'*' * _stars(region)}{draws.below(10_000):04d}"
        return f"{draws.weighted(_LOCAL_WEIGHTS)}***@{draws.weighted(_DOMAIN_WEIGHTS)}***"

    def __repr__(self) -> str:
        return "DecoyMasks(key=<redacted>)"
