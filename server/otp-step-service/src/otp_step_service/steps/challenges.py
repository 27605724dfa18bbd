"""The server-side memory of a Generate: the Cognito challenge Validate must answer, and the store's verdicts.

The journey passes Validate only the identifier and the code, never a Cognito session (sessions must not reach
orchestrators, journey state or logs), so Generate keeps the session under (connection, journey run,
identifier) until it is used, exhausted or expired. The store (see `ports.ChallengeStore`) decides and counts
in one atomic operation before Cognito is asked, and settles in one after: two operations per step.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, replace

from .outcomes import Channel


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
    """The counter of codes sent to one identifier across all journeys (the send budget)."""
    return "sends:" + hashlib.sha256(f"{connection}\x00{identifier}".encode()).hexdigest()


def lockout_subject(connection: str, identifier: str) -> str:
    """The counter of wrong codes for one identifier across all journeys (the lockout)."""
    return "failures:" + hashlib.sha256(f"{connection}\x00{identifier}".encode()).hexdigest()


# One Cognito user may be reached through several identifiers: a pool with alias attributes signs a user in by
# username, verified email or verified phone number, each normalized to a different identifier. Counting per
# identifier only would give that user (and an attacker flooding their inbox or guessing their codes) one
# send budget and one lockout per alias. So sends and wrong codes are also counted per *user*: the username
# Cognito resolves the identifier to (its challenge's USERNAME), known from the first code sent to it. The
# store remembers which user each identifier reached (`alias_subject` -> the user's digest), and counts under
# `USER_SENDS + user` and `USER_FAILURES + user`; stores build these names from the prefixes, so the prefixes
# are defined here once.
USER_SENDS = "sends:user:"
USER_FAILURES = "failures:user:"


# Codes that may have gone out through an identifier whose user is still unknown, their answers cut off by
# the caller (SendResult.LOST: a short deadline, a cancelled call), before its Generates wait for the send
# window to end: such a code cannot be counted for the user, so without this bound answers withheld on
# purpose would give each fresh alias a budget of its own.
MAX_UNRESOLVED_SENDS = 2


def user_digest(connection: str, username: str) -> str:
    """A Cognito user of a connection as stores name it: a digest, so the store never spells out a username."""
    return hashlib.sha256(f"{connection}\x00user\x00{username}".encode()).hexdigest()


def alias_subject(connection: str, identifier: str) -> str:
    """Where a store remembers which Cognito user an identifier reached (its value: the user's digest)."""
    return "alias:" + hashlib.sha256(f"{connection}\x00{identifier}".encode()).hexdigest()


def user_lockout_subjects(identifier_subject: str, challenge: Challenge) -> tuple[str, ...]:
    """Every wrong-code counter an attempt at `challenge` adds to: its identifier's, and its user's if known."""
    if challenge.user:
        return (identifier_subject, USER_FAILURES + challenge.user)
    return (identifier_subject,)


# Stores keep a challenge past its expiry, so Validate can still say CHALLENGE_EXPIRED (a journey branches
# differently on "expired" than on "never generated"): as long again as it lived, at most this long. The store
# then holds at most twice rate x lifetime entries, steady after two lifetimes.
EXPIRED_GRACE_SECONDS = 300

# A reservation (pending placeholder) carries a lease: the wall-clock moment by which its Generate has
# certainly settled it or stopped (the step's deadline: the service runs no step past it, and a settle that
# fails is retried only within it). Past the lease the instance that made it died mid-send (kill -9, an
# out-of-memory kill, a lost node): a retry of the same execution takes it over (its send stays counted as
# maybe sent, and one more code goes out, the one the journey can use); other executions see a code sent at
# its time, under the cooldown and the budgets. A step without a deadline holds its lease this long, longer
# than any Cognito call with its retries; no lease is longer.
RESERVATION_SECONDS = 120

# Added to every lease: the instances' wall clocks may disagree by this much (NTP keeps them within
# milliseconds), and the step's last store write may still be on its way when its deadline passes.
LEASE_MARGIN_SECONDS = 1.0


def lease_until(now: float, seconds_left: float | None) -> float:
    """The lease of a reservation made at wall-clock `now` by a step with `seconds_left` to its deadline."""
    held = RESERVATION_SECONDS if seconds_left is None else min(seconds_left, RESERVATION_SECONDS)
    return now + held + LEASE_MARGIN_SECONDS


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
    # Enumeration protection: Generate pretended a code was sent; Validate rejects every code, so an unknown
    # (or disabled, or phone-less) user is indistinguishable from a known one.
    decoy: bool = False
    # Cognito may have sent a code, but the session never came back (a timeout, a cancelled call): nothing to
    # validate, yet the code counts, and the cooldown holds as if it had been delivered.
    unusable: bool = False
    # The Cognito user this challenge's identifier reached (`user_digest`), "" while unknown: wrong codes count
    # against that user as well as the identifier. Not secret (a digest); the username itself is. A decoy's
    # may stand in for a user (the identifier's own digest): stores map an identifier to a decoy's user only
    # where they know none, so a decoy never takes an identifier away from the user a real answer named.
    user: str = ""
    # A reservation's lease (wall-clock epoch seconds, see RESERVATION_SECONDS), read only while pending.
    lease_until: float = 0.0

    @property
    def attempts_remaining(self) -> int:
        """Codes Validate still accepts."""
        return max(self.max_attempts - self.attempts_used, 0)

    @property
    def usable(self) -> bool:
        """Whether Validate can answer this challenge at all."""
        return not (self.pending or self.unusable)

    def lease_end(self, reservation_seconds: float) -> float:
        """When this reservation's lease ends (one made without a lease is held `reservation_seconds`)."""
        return self.lease_until or self.sent_at + reservation_seconds

    @property
    def forget_at(self) -> float:
        """When a store may drop this challenge (expiry plus the grace period)."""
        lifetime = self.expires_at - self.sent_at if self.sent_at else EXPIRED_GRACE_SECONDS
        return self.expires_at + min(max(lifetime, 0.0), EXPIRED_GRACE_SECONDS)

    def with_attempt(self, delta: int = 1) -> Challenge:
        """This challenge with `delta` more attempts used."""
        return replace(self, attempts_used=max(self.attempts_used + delta, 0))

    def __repr__(self) -> str:
        return (
            f"Challenge(channel={self.channel.value}, destination={self.masked_destination}, "
            f"attempts={self.attempts_used}/{self.max_attempts}, session=<redacted>)"
        )


class SendVerdict(enum.Enum):
    """What a store says when Generate asks to send a code for a key."""

    RESERVED = "reserved"  # go ahead: the send is counted and the placeholder holds the key
    REPLAY = "replay"  # the same execution already sent a code: answer with its challenge
    # The same execution's earlier attempt holds the key and its lease lives: it is sending right now (or its
    # instance died less than a lease ago). Ask again shortly: it replays, or takes the reservation over.
    IN_FLIGHT = "in_flight"
    TOO_SOON = "too_soon"  # a code went out within the cooldown (or is being sent right now)
    OVER_BUDGET = "over_budget"  # the identifier's send budget for the window is spent
    BUDGET_TRIPPED = "budget_tripped"  # the connection's send budget (the spend circuit breaker) is spent
    LOCKED = "locked"  # too many wrong codes for the identifier: no code is sent


@dataclass(frozen=True, slots=True)
class SendBudget:
    """A connection-wide cap on codes sent per window: the spend circuit breaker."""

    subject: str
    limit: int
    window_seconds: int


def budget_windows(
    per_minute: int | None, per_hour: int | None, per_day: int | None
) -> tuple[tuple[int, int], ...]:
    """(codes, window seconds) for each of a configuration's per-minute / hour / day send budgets that is set."""
    return tuple(
        (limit, window)
        for limit, window in ((per_minute, 60), (per_hour, 3600), (per_day, 86400))
        if limit is not None
    )


def budget_subject(connection: str, window_seconds: int) -> str:
    """The counter of codes sent through one connection per window."""
    return f"budget:{hashlib.sha256(connection.encode()).hexdigest()[:32]}:{window_seconds}"


def tenant_budget_subject(connection: str, tenant_id: str, window_seconds: int) -> str:
    """The counter of codes sent through one connection for one tenant per window."""
    digest = hashlib.sha256(f"{connection}\x00{tenant_id}".encode()).hexdigest()[:32]
    return f"budget:tenant:{digest}:{window_seconds}"


# Every counter belongs to one connection (its identifiers, users, tenants, number ranges and budgets), except
# a caller's send budgets, which span every connection the caller uses. Stores that spread keys over shards
# (Redis Cluster) keep one connection's keys together and a caller's budgets together, by this scope.
CALLER_BUDGETS = "budget:caller:"


def caller_budget_subject(caller: str, window_seconds: int) -> str:
    """The counter of codes sent for one authenticated caller per window, over all its connections."""
    return f"{CALLER_BUDGETS}{hashlib.sha256(caller.encode()).hexdigest()[:32]}:{window_seconds}"


def caller_scope(subject: str) -> str:
    """The caller a counter belongs to across connections (its per-window budgets share it); "" when the
    counter belongs to one connection."""
    if subject.startswith(CALLER_BUDGETS):
        return subject.rsplit(":", 1)[0]
    return ""


def ip_subject(connection: str, ip_address: str) -> str:
    """The counter of codes sent for one end-user IP address (when the journey supplies it)."""
    return "ip:" + hashlib.sha256(f"{connection}\x00{ip_address}".encode()).hexdigest()


def prefix_subject(connection: str, prefix: str) -> str:
    """The counter of codes sent by SMS to one number prefix (the pumping velocity guard)."""
    return "prefix:" + hashlib.sha256(f"{connection}\x00{prefix}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Everything `begin_send` decides on, in one atomic operation."""

    key: ChallengeKey
    placeholder: Challenge  # pending, with the nonce, sent_at and execution id of this attempt
    now: float
    cooldown_seconds: float
    sends_subject: str
    send_limit: int
    send_window_seconds: int
    lockout_subject: str
    lockout_threshold: int
    # How long a reservation without a lease (one an earlier version made, during an upgrade) is held.
    reservation_seconds: float = RESERVATION_SECONDS
    budgets: tuple[SendBudget, ...] = ()
    # The identifier's entry in the store's map of which Cognito user it reached ("" = no per-user counting).
    # When the user is known, begin_send checks and counts that user's sends and wrong codes (same limit and
    # threshold as the identifier's); when not, the identifier sends one code at a time until Cognito's answer
    # names the user (finish_send then counts the send for them), so a flood through a fresh alias cannot race
    # past the user's budget. The map remembers a user for `alias_seconds`.
    alias_subject: str = ""
    alias_seconds: int = 0
    max_unresolved_sends: int = MAX_UNRESOLVED_SENDS

    @property
    def counted(self) -> tuple[str, ...]:
        """Every counter a RESERVED verdict adds one to (and a NOT_SENT settle gives back), besides the
        user's (the store knows whether it counted that one)."""
        return (self.sends_subject, *(b.subject for b in self.budgets))

    @property
    def nonce(self) -> str:
        """The reservation's nonce (its placeholder's)."""
        return self.placeholder.nonce


@dataclass(frozen=True, slots=True)
class SendReservation:
    """The verdict; the earlier challenge on REPLAY; seconds to wait on TOO_SOON, OVER_BUDGET, BUDGET_TRIPPED
    and IN_FLIGHT (what is left of the earlier attempt's lease)."""

    verdict: SendVerdict
    challenge: Challenge | None = None
    wait_seconds: float = 0.0
    # RESERVED in place of the same execution's reservation whose lease ran out (its instance died mid-send):
    # that send stays counted, as one that may have gone out.
    took_over: bool = False


class SendResult(enum.Enum):
    """How a reserved send ended, for `finish_send`."""

    SENT = "sent"  # Cognito sent the code (or a decoy stands in for it): store the challenge
    MAYBE_SENT = "maybe_sent"  # no session came back, but Cognito may have acted: keep the count
    # As MAYBE_SENT, but the answer was cut off on the caller's side (its deadline, or it went away): a caller
    # can do that on purpose, so while the identifier's user is unknown such codes are bounded per identifier
    # (MAX_UNRESOLVED_SENDS). Cognito's own failures (5xx, its slowness past call_timeout) are not: an
    # outage must not hold a user's fresh identifier for the send window once Cognito is back.
    LOST = "lost"
    NOT_SENT = "not_sent"  # Cognito certainly sent nothing: release the key, give the send back


class AttemptVerdict(enum.Enum):
    """What a store says when Validate asks to spend one attempt."""

    GRANTED = "granted"
    NOT_FOUND = "not_found"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"
    LOCKED = "locked"
    # The identifier's user is locked out by wrong codes through another alias, and the request hides that
    # (`AttemptRequest.hide_user_lockout`): the attempt is spent and the identifier's wrong code counted, as
    # for a wrong code, with the challenge; nothing may judge the code.
    USER_LOCKED = "user_locked"


@dataclass(frozen=True, slots=True)
class AttemptRequest:
    """Everything `begin_attempt` decides on, in one atomic operation."""

    key: ChallengeKey
    now: float
    lockout_subject: str
    lockout_threshold: int
    lockout_window_seconds: int
    # Enumeration protection: a lockout of the user earned through another alias is not told through this
    # identifier (that would link the two). The store then decides as for a user who is not locked (not
    # found, expired, exhausted) and answers USER_LOCKED where it would grant. Otherwise it answers LOCKED
    # and spends nothing.
    hide_user_lockout: bool = False


@dataclass(frozen=True, slots=True)
class AttemptGrant:
    """The verdict, and on GRANTED (and USER_LOCKED) the challenge with the attempt already counted."""

    verdict: AttemptVerdict
    challenge: Challenge | None = None


class Judgement(enum.Enum):
    """What Cognito's answer to a code means for the store (`finish_attempt`)."""

    RIGHT = "right"  # signed in: the challenge is used, the wrong-code count given back
    WRONG = "wrong"  # a wrong code: both counts stay; the challenge goes once no attempt is left
    UNJUDGED = "unjudged"  # Cognito certainly did not judge it: the attempt and the count are given back
    SESSION_DEAD = "session_dead"  # Cognito will judge no more codes for it: gone, the count given back
    # Cognito may have judged it (timeout, 5xx, dropped): the attempt stays spent (Cognito may have counted it
    # against its own session cap), but not the identifier's wrong-code count. The lockout guards against
    # guessing with feedback, and an answer that never arrived gave none: ten right codes lost to a flaky
    # network must not lock the user out for the window.
    UNKNOWN = "unknown"
