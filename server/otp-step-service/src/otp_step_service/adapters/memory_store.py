"""The in-process challenge store: one service instance, state lost on restart.

Every operation runs to completion on the event loop without awaiting anything, so each is atomic without a
lock. Expired challenges and stale counter windows leave the store on their own (a heap ordered by expiry is
swept on every write), so memory stays flat under load however many journeys never come back to Validate.

Challenges are kept as tuples of strings and numbers, not as Challenge objects: the interpreter's cycle
collector stops tracking such tuples, so a full collection does not walk the 100,000-odd live challenges of a
busy instance (30 ms per collection as objects, 2 ms as tuples: the difference showed in the p99).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import replace

from otp_step_service.steps.challenges import (
    USER_FAILURES,
    USER_SENDS,
    AttemptGrant,
    AttemptRequest,
    AttemptVerdict,
    Challenge,
    ChallengeKey,
    Judgement,
    SendRequest,
    SendReservation,
    SendResult,
    SendVerdict,
)
from otp_step_service.steps.clock import SYSTEM_CLOCK, Clock
from otp_step_service.steps.outcomes import Channel

# Beside an identifier's alias entry: codes that may have gone out while its user was unknown.
_UNRESOLVED = ":unresolved"

_Packed = tuple[str, str, str, str, float, int, int, str, float, str, bool, bool, bool, str, float]


def _pack(c: Challenge) -> _Packed:
    return (
        c.username,
        c.session,
        c.channel.value,
        c.masked_destination,
        c.expires_at,
        c.max_attempts,
        c.attempts_used,
        c.step_execution_id,
        c.sent_at,
        c.nonce,
        c.pending,
        c.decoy,
        c.unusable,
        c.user,
        c.lease_until,
    )


def _unpack(p: _Packed) -> Challenge:
    return Challenge(
        p[0], p[1], Channel(p[2]), p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13], p[14]
    )


class _Challenges:
    """storage key -> Challenge, kept packed (see the module docstring)."""

    def __init__(self) -> None:
        self._packed: dict[str, _Packed] = {}

    def get(self, key: str) -> Challenge | None:
        packed = self._packed.get(key)
        return None if packed is None else _unpack(packed)

    def __setitem__(self, key: str, challenge: Challenge) -> None:
        self._packed[key] = _pack(challenge)

    def __delitem__(self, key: str) -> None:
        del self._packed[key]

    def __len__(self) -> int:
        return len(self._packed)


class InMemoryChallengeStore:
    """ChallengeStore in dicts on the event loop's thread."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._challenges = _Challenges()
        self._counters: dict[str, tuple[int, float]] = {}  # subject -> (events, window end)
        self._aliases: dict[str, tuple[str, float]] = {}  # alias subject -> (user digest, forget at)
        # alias subject -> (nonce, until): the one send in flight (or maybe sent) while the user is unknown.
        self._resolving: dict[str, tuple[str, float]] = {}
        # storage key -> (a takeover's nonce, the lost reservation it replaced): put back should the takeover
        # send nothing (a code that may have gone out keeps its cooldown).
        self._replaced: dict[str, tuple[str, Challenge]] = {}
        self._expiry: list[tuple[float, str]] = []  # (forget at, storage key or subject), lazily cleaned

    async def begin_send(self, request: SendRequest) -> SendReservation:
        """Decide, count and hold the key, atomically."""
        now = request.now
        user = self._user(request.alias_subject, now)
        if self._count(request.lockout_subject, now) >= request.lockout_threshold or (
            user and self._count(USER_FAILURES + user, now) >= request.lockout_threshold
        ):
            return SendReservation(SendVerdict.LOCKED)
        skey = request.key.storage_key()
        existing = self._challenges.get(skey)
        placeholder = request.placeholder
        lost_nonce = ""  # this execution's reservation whose lease ran out, taken over here
        if existing is not None and existing.expires_at > now:
            same_execution = bool(placeholder.step_execution_id) and (
                existing.step_execution_id == placeholder.step_execution_id
            )
            if same_execution and existing.usable:
                return SendReservation(SendVerdict.REPLAY, existing)
            if same_execution and existing.pending:
                lease = existing.lease_end(request.reservation_seconds)
                if lease > now:
                    return SendReservation(SendVerdict.IN_FLIGHT, wait_seconds=lease - now)
                lost_nonce = existing.nonce  # its cooldown is this execution's own: no wait for it
            else:
                wait = existing.sent_at + request.cooldown_seconds - now
                if wait > 0:
                    return SendReservation(SendVerdict.TOO_SOON, wait_seconds=max(wait, 1.0))
        sent, window_end = self._counters.get(request.sends_subject, (0, 0.0))
        if window_end > now and sent >= request.send_limit:
            return SendReservation(SendVerdict.OVER_BUDGET, wait_seconds=window_end - now)
        if user:
            sent, window_end = self._counters.get(USER_SENDS + user, (0, 0.0))
            if window_end > now and sent >= request.send_limit:
                return SendReservation(SendVerdict.OVER_BUDGET, wait_seconds=window_end - now)
        elif request.alias_subject:
            holder, until = self._resolving.get(request.alias_subject, ("", 0.0))
            if until > now and holder != lost_nonce:  # the identifier's first code is on its way
                return SendReservation(SendVerdict.TOO_SOON, wait_seconds=1.0)
            lost, ends = self._counters.get(request.alias_subject + _UNRESOLVED, (0, 0.0))
            if ends > now and lost >= request.max_unresolved_sends:
                return SendReservation(SendVerdict.TOO_SOON, wait_seconds=ends - now)
        for budget in request.budgets:
            spent, ends = self._counters.get(budget.subject, (0, 0.0))
            if ends > now and spent >= budget.limit:
                return SendReservation(SendVerdict.BUDGET_TRIPPED, wait_seconds=ends - now)
        self._increment(request.sends_subject, request.send_window_seconds, now)
        for budget in request.budgets:
            self._increment(budget.subject, budget.window_seconds, now)
        if user:
            self._increment(USER_SENDS + user, request.send_window_seconds, now)
        elif request.alias_subject:
            until = placeholder.lease_end(request.reservation_seconds)
            self._hold(self._resolving, request.alias_subject, placeholder.nonce, until)
        # The placeholder records the user counted, so finish_send knows what to give back or add. A lost
        # reservation it replaces keeps every count it made: a code that may have gone out.
        self._put(skey, replace(placeholder, user=user), now)
        if lost_nonce and existing is not None:
            self._replaced[skey] = (placeholder.nonce, existing)
        return SendReservation(SendVerdict.RESERVED, took_over=bool(lost_nonce))

    async def finish_send(
        self, request: SendRequest, result: SendResult, challenge: Challenge | None
    ) -> None:
        """Store the outcome of the reservation, or release it and give the send back; learn the user."""
        skey, nonce, alias = request.key.storage_key(), request.nonce, request.alias_subject
        now = self._clock.now()
        current = self._challenges.get(skey)
        mine = current is not None and current.nonce == nonce
        counted_user = current.user if mine and current is not None else ""
        if result is SendResult.NOT_SENT:
            # Only this reservation's own counts, while it is one: made again, or for a reservation that may
            # not have been made, it gives nothing back twice or for nothing.
            if mine and current is not None and current.pending:
                taken_over, lost = self._replaced.pop(skey, ("", current))
                if taken_over == nonce:
                    self._put(skey, lost, now)  # the lost reservation this takeover replaced, as it was
                else:
                    del self._challenges[skey]
                self._decrement(*request.counted)
                if counted_user:
                    self._decrement(USER_SENDS + counted_user)
            self._release(alias, nonce)
            return
        if not mine or current is None:
            # Its reservation was taken over (its lease ran out: a slow instance) or is gone: it writes nothing
            # (the takeover counts and records the execution's send), and ends only its own hold.
            self._release(alias, nonce)
            return
        if current.pending and challenge is not None:
            self._put(skey, challenge, now)  # over the reservation only, as in every store
            self._replaced.pop(skey, None)
        if not alias:
            return
        user = challenge.user if challenge is not None else ""
        unresolved = alias + _UNRESOLVED
        known = self._user(alias, now)
        if user and challenge is not None and challenge.decoy and known:
            # A decoy's user never replaces a known one (it may only stand in for one): the entry is kept,
            # and held as long as a send would hold it; begin_send counted the send for that user.
            self._hold(self._aliases, alias, known, now + request.alias_seconds)
        elif user:
            # This send if begin_send could not count it for the user (unknown then, or since changed), and
            # the codes that went out through this identifier while its user was unknown: all the user's.
            sends = int(user != counted_user) + self._count(unresolved, now)
            if sends:
                self._increment(USER_SENDS + user, request.send_window_seconds, now, by=sends)
            self._counters.pop(unresolved, None)
            self._hold(self._aliases, alias, user, now + request.alias_seconds)
        elif not counted_user and result is SendResult.LOST and current.pending:
            # To a user nobody can name yet; counted once, over the reservation (a settle made again finds
            # its own record, no longer pending).
            self._increment(unresolved, request.send_window_seconds, now)
        self._release(alias, nonce)

    async def begin_attempt(self, request: AttemptRequest) -> AttemptGrant:
        """Check the lockout, spend one attempt and count one wrong code, atomically."""
        now = request.now
        if self._count(request.lockout_subject, now) >= request.lockout_threshold:
            return AttemptGrant(AttemptVerdict.LOCKED)
        skey = request.key.storage_key()
        challenge = self._challenges.get(skey)
        if challenge is None or not challenge.usable:
            return AttemptGrant(AttemptVerdict.NOT_FOUND)
        user_failures = USER_FAILURES + challenge.user if challenge.user else ""
        user_locked = bool(user_failures) and self._count(user_failures, now) >= request.lockout_threshold
        if user_locked and not request.hide_user_lockout:
            return AttemptGrant(AttemptVerdict.LOCKED)
        if challenge.expires_at <= now:
            del self._challenges[skey]
            return AttemptGrant(AttemptVerdict.EXPIRED)
        if challenge.attempts_remaining <= 0:
            del self._challenges[skey]
            return AttemptGrant(AttemptVerdict.EXHAUSTED)
        spent = challenge.with_attempt()
        self._challenges[skey] = spent
        self._increment(request.lockout_subject, request.lockout_window_seconds, now)
        if user_locked:  # spent and counted as a wrong code is, for a code nothing will judge
            return AttemptGrant(AttemptVerdict.USER_LOCKED, spent)
        if user_failures:
            self._increment(user_failures, request.lockout_window_seconds, now)
        return AttemptGrant(AttemptVerdict.GRANTED, spent)

    async def finish_attempt(
        self, key: ChallengeKey, nonce: str, judgement: Judgement, lockout_subjects: Sequence[str]
    ) -> None:
        """Settle the challenge `nonce` and the wrong-code counts per Cognito's judgement."""
        skey = key.storage_key()
        challenge = self._challenges.get(skey)
        mine = challenge is not None and challenge.nonce == nonce
        if judgement in (Judgement.RIGHT, Judgement.SESSION_DEAD):
            if mine:
                del self._challenges[skey]
            self._decrement(*lockout_subjects)
        elif judgement is Judgement.UNJUDGED:
            if mine and challenge is not None:
                self._challenges[skey] = challenge.with_attempt(-1)
            self._decrement(*lockout_subjects)
        elif judgement is Judgement.UNKNOWN:
            self._decrement(*lockout_subjects)  # the attempt stays spent
        elif (
            judgement is Judgement.WRONG
            and mine
            and challenge is not None
            and challenge.attempts_remaining <= 0
        ):
            del self._challenges[skey]

    async def load(self, key: ChallengeKey) -> Challenge | None:
        """The live, usable challenge, if any."""
        challenge = self._challenges.get(key.storage_key())
        if challenge is None or not challenge.usable or challenge.expires_at <= self._clock.now():
            return None
        return challenge

    async def events(self, connection: str, subject: str) -> int:
        """A counter's value in its current window."""
        return self._count(subject, self._clock.now())

    async def aclose(self) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        """Live entries (challenges and counter windows), for tests and memory checks."""
        self._sweep(self._clock.now())
        return len(self._challenges) + len(self._counters) + len(self._aliases) + len(self._resolving)

    # -- internals ---------------------------------------------------------------------------------------
    def _count(self, subject: str, now: float) -> int:
        events, window_end = self._counters.get(subject, (0, 0.0))
        return events if window_end > now else 0

    def _increment(self, subject: str, window_seconds: int, now: float, by: int = 1) -> None:
        """`by` more events in a fixed window that starts with the first event."""
        events, window_end = self._counters.get(subject, (0, 0.0))
        if window_end <= now:
            events, window_end = 0, now + window_seconds
            heapq.heappush(self._expiry, (window_end, subject))
        self._counters[subject] = (events + by, window_end)

    def _decrement(self, *subjects: str) -> None:
        for subject in subjects:
            events, window_end = self._counters.get(subject, (0, 0.0))
            if events > 0:
                self._counters[subject] = (events - 1, window_end)

    def _user(self, alias: str, now: float) -> str:
        """The user digest the identifier's alias entry names, "" when unknown (or forgotten)."""
        user, forget_at = self._aliases.get(alias, ("", 0.0)) if alias else ("", 0.0)
        return user if forget_at > now else ""

    def _hold(self, table: dict[str, tuple[str, float]], name: str, value: str, until: float) -> None:
        table[name] = (value, until)
        heapq.heappush(self._expiry, (until, name))

    def _release(self, alias: str, nonce: str) -> None:
        """End the identifier's one-send-at-a-time hold, if this reservation holds it."""
        if alias and self._resolving.get(alias, ("", 0.0))[0] == nonce:
            del self._resolving[alias]

    def _put(self, skey: str, challenge: Challenge, now: float) -> None:
        self._sweep(now)
        self._challenges[skey] = challenge
        heapq.heappush(self._expiry, (challenge.forget_at, skey))

    def _sweep(self, now: float) -> None:
        # An entry replaced with a later expiry has a stale heap item: it is checked against the live value
        # before anything is deleted.
        while self._expiry and self._expiry[0][0] <= now:
            _, name = heapq.heappop(self._expiry)
            challenge = self._challenges.get(name)
            if challenge is not None and challenge.forget_at <= now:
                del self._challenges[name]
                self._replaced.pop(name, None)
            window = self._counters.get(name)
            if window is not None and window[1] <= now:
                del self._counters[name]
            for table in (self._aliases, self._resolving):
                entry = table.get(name)
                if entry is not None and entry[1] <= now:
                    del table[name]
