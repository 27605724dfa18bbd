"""The server-side memory of a Generate: the Cognito challenge Validate must answer.

The journey passes Validate only the identifier and the code, never a Cognito session (sessions must not reach
orchestrators, journey state or logs), so Generate keeps the session here under (connection, journey run,
identifier) until it is used, exhausted or expired. Stores are shared by all workers and may be shared by
several service instances (Redis), so every read-modify-write they offer is atomic.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, replace
from typing import Protocol

from .identifiers import InvalidIdentifierError, UserIdentifier, parse_identifier
from .outcomes import Channel, FailureCode, StepFailure
from .ports import ConnectionPolicy


@dataclass(frozen=True, slots=True)
class ChallengeKey:
    """Where a challenge lives: one per connection, journey run and normalized identifier."""

    connection: str
    journey_run_id: str
    identifier: str

    def storage_key(self) -> str:
        """A stable key that does not spell out the identifier (stores may be inspected by operators)."""
        digest = hashlib.sha256(
            f"{self.connection}\x00{self.journey_run_id}\x00{self.identifier}".encode()
        ).hexdigest()
        return f"challenge:{digest}"


def sends_subject(connection: str, identifier: str) -> str:
    """The key under which codes sent to one identifier are counted across all journeys."""
    return "sends:" + hashlib.sha256(f"{connection}\x00{identifier}".encode()).hexdigest()


def identifier_subject(connection: str, identifier: str) -> str:
    """The key under which failed codes are counted for one identifier across all journeys."""
    return "failures:" + hashlib.sha256(f"{connection}\x00{identifier}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Challenge:
    """A pending Cognito OTP challenge. `session` is a secret: it never leaves the service."""

    username: str
    session: str
    channel: Channel
    masked_destination: str
    expires_at: float  # wall-clock epoch seconds: instances sharing a store share no monotonic clock
    max_attempts: int
    attempts_used: int = 0
    step_execution_id: str = ""
    sent_at: float = 0.0  # wall-clock epoch seconds, for the resend cooldown
    # Identifies this challenge among the ones a key holds over time: a slow Validate of an old challenge must
    # not discard or refund the one a resend put in its place.
    nonce: str = ""
    # A reservation: Generate is asking Cognito right now. Holds the key against concurrent Generates (one code
    # per cooldown, one per retried execution); Validate treats it as no challenge yet.
    pending: bool = False
    # Enumeration protection for a pool that reports unknown users: Generate pretends a code was sent and
    # Validate rejects every code, so an unknown user is indistinguishable from a known one.
    decoy: bool = False

    @property
    def attempts_remaining(self) -> int:
        """Codes Validate still accepts."""
        return max(self.max_attempts - self.attempts_used, 0)

    @property
    def forget_at(self) -> float:
        """When a store may drop this challenge (expiry plus the grace period)."""
        lifetime = self.expires_at - self.sent_at if self.sent_at else EXPIRED_GRACE_SECONDS
        return self.expires_at + min(max(lifetime, 0.0), EXPIRED_GRACE_SECONDS)

    def with_attempt(self) -> Challenge:
        """This challenge with one more attempt used."""
        return replace(self, attempts_used=self.attempts_used + 1)

    def __repr__(self) -> str:
        return (
            f"Challenge(channel={self.channel.value}, destination={self.masked_destination}, "
            f"attempts={self.attempts_used}/{self.max_attempts}, session=<redacted>)"
        )


# Stores keep a challenge past its expiry, so Validate can still say CHALLENGE_EXPIRED (a journey branches
# differently on "expired" than on "never generated"): as long again as it lived, at most this long. The store
# then holds at most twice rate x lifetime entries, steady after two lifetimes.
EXPIRED_GRACE_SECONDS = 300


class ChallengeStoreError(Exception):
    """The store failed or could not be reached (a shared store's network, say)."""


class ReservationVerdict(enum.Enum):
    """What a store says when Generate asks to send a code for a key."""

    RESERVED = "reserved"  # go ahead: the placeholder holds the key
    REPLAY = "replay"  # the same execution already sent a code: answer with its challenge
    TOO_SOON = "too_soon"  # a code went out within the cooldown (or is being sent right now)


@dataclass(frozen=True, slots=True)
class Reservation:
    """The verdict; the earlier challenge on REPLAY; seconds to wait on TOO_SOON."""

    verdict: ReservationVerdict
    challenge: Challenge | None = None
    wait_seconds: float = 0.0


class AttemptVerdict(enum.Enum):
    """What a store says when Validate asks to spend one attempt."""

    GRANTED = "granted"
    NOT_FOUND = "not_found"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True, slots=True)
class AttemptGrant:
    """The verdict, and on GRANTED the challenge with the attempt already counted."""

    verdict: AttemptVerdict
    challenge: Challenge | None = None


class ChallengeStore(Protocol):
    """Keeps challenges and failure counters. Implementations: in memory, Redis."""

    def save(self, key: ChallengeKey, challenge: Challenge) -> None:
        """Store (or replace) the challenge; it disappears by itself at `expires_at`."""

    def load(self, key: ChallengeKey) -> Challenge | None:
        """The live challenge, or None (missing or expired)."""

    def reserve(
        self, key: ChallengeKey, placeholder: Challenge, now: float, cooldown_seconds: float
    ) -> Reservation:
        """Atomically decide whether Generate may send a code for `key`, and if so hold the key with
        `placeholder` (pending) until `save` replaces it or `discard` releases it."""

    def begin_attempt(self, key: ChallengeKey, now: float) -> AttemptGrant:
        """Atomically spend one attempt: counted before Cognito is asked, so concurrent Validates of one
        challenge can never try more codes than the cap. Expired or exhausted challenges are removed."""

    def refund_attempt(self, key: ChallengeKey, nonce: str) -> None:
        """Give back an attempt Cognito never judged, if `key` still holds the challenge `nonce`."""

    def discard(self, key: ChallengeKey, nonce: str) -> None:
        """Remove the challenge `nonce` (used, exhausted, dead at Cognito, or a released reservation)."""

    # A windowed counter per subject: wrong codes per identifier (lockout), codes sent per identifier (cap).

    def count_event(self, subject: str, window_seconds: int) -> int:
        """Add one event for `subject` and return the count within the current window (which starts with the
        first event)."""

    def uncount_event(self, subject: str) -> None:
        """Take one counted event back (a code turned out right or was never judged; a send did not happen)."""

    def events(self, subject: str) -> int:
        """Events for `subject` within the current window."""


def admit(
    store: ChallengeStore, policy: ConnectionPolicy, raw_identifier: str
) -> UserIdentifier | StepFailure:
    """What both steps check before Cognito is asked: a well-formed identifier that is not locked out.

    Generate checks the lockout too: no code is sent to a locked identifier, or an attacker could keep
    guessing across fresh challenges (a per-challenge cap alone is defeated by opening many journeys).
    """
    try:
        identifier = parse_identifier(raw_identifier, policy.default_phone_region)
    except InvalidIdentifierError as exc:
        return StepFailure(FailureCode.INVALID_IDENTIFIER, str(exc))
    if store.events(identifier_subject(policy.name, identifier.value)) >= policy.lockout_threshold:
        return locked_failure(policy.lockout_window_seconds)
    return identifier


def locked_failure(window_seconds: int) -> StepFailure:
    """The failure of a step whose identifier is locked out (too many wrong codes in the window)."""
    return StepFailure(
        FailureCode.IDENTIFIER_LOCKED,
        f"too many wrong codes for this identifier; locked for up to {window_seconds} s",
    )
