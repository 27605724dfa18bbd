"""USER_AUTH sessions: opaque ids mapped to the challenge in progress, kept in memory under a lock."""

from __future__ import annotations

import enum
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

#: ``secrets.token_urlsafe(96)`` is 128 characters: inside Cognito's documented 20-2048.
_SESSION_BYTES = 96
_SWEEP_INTERVAL_SECONDS = 5.0


@dataclass
class AuthSession:
    """One step of a USER_AUTH sign-in.

    ``username`` is ``None`` for a phantom session (unknown user behind ``PreventUserExistenceErrors``):
    it looks like a real one, but no code was sent and every answer is wrong.
    """

    id: str
    user_pool_id: str
    client_id: str
    username: str | None
    challenge: str
    expires_at: float
    available_challenges: tuple[str, ...] = ()
    code: str | None = None
    attempts: int = 0
    lifetime_seconds: float = 0.0
    # Set once the cap is reached: the session stays known (so the answer is "dead session", not
    # "unknown session") until it expires.
    dead: bool = field(default=False)


class AnswerVerdict(enum.Enum):
    """What checking a code against a session concluded."""

    ACCEPTED = "accepted"
    MISMATCH = "mismatch"
    EXPIRED = "expired"
    INVALID = "invalid"


class SessionStore:
    """Thread-safe map of session id to :class:`AuthSession`. Expired sessions are swept as we go."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, AuthSession] = {}
        self._next_sweep = 0.0

    def create(
        self,
        *,
        user_pool_id: str,
        client_id: str,
        username: str | None,
        challenge: str,
        lifetime_seconds: float,
        available_challenges: tuple[str, ...] = (),
        code: str | None = None,
    ) -> AuthSession:
        """Start a session that expires ``lifetime_seconds`` from now."""
        now = time.monotonic()
        session = AuthSession(
            id=secrets.token_urlsafe(_SESSION_BYTES),
            user_pool_id=user_pool_id,
            client_id=client_id,
            username=username,
            challenge=challenge,
            expires_at=now + lifetime_seconds,
            available_challenges=available_challenges,
            code=code,
            lifetime_seconds=lifetime_seconds,
        )
        with self._lock:
            self._sessions[session.id] = session
            if now >= self._next_sweep:
                self._sweep(now)
        return session

    def owns(self, session_id: str | None) -> bool:
        """Whether ``session_id`` is (or recently was) one of ours."""
        return bool(session_id) and session_id in self._sessions

    def get_live(self, session_id: str) -> tuple[AuthSession | None, AnswerVerdict | None]:
        """The session if it can still be answered, else ``(None, EXPIRED | INVALID)``."""
        with self._lock:
            return self._live_locked(session_id)

    def _live_locked(self, session_id: str) -> tuple[AuthSession | None, AnswerVerdict | None]:
        session = self._sessions.get(session_id)
        if session is None:
            return None, AnswerVerdict.INVALID
        if time.monotonic() >= session.expires_at:
            del self._sessions[session_id]
            return None, AnswerVerdict.EXPIRED
        if session.dead:
            return None, AnswerVerdict.INVALID
        return session, None

    def consume(self, session_id: str) -> None:
        """End a session (answered, or replaced by the next step): it can never be used again."""
        with self._lock:
            self._sessions.pop(session_id, None)

    def check_code(self, session_id: str, answer: str, attempt_cap: int) -> AnswerVerdict:
        """Check ``answer`` atomically: accept (and consume) or count a failed attempt.

        [inferred] ``attempt_cap`` wrong answers are each reported as a mismatch; the session is dead
        after the last of them, so the next answer is refused whatever it is.
        """
        with self._lock:
            session, refused = self._live_locked(session_id)
            if session is None:
                return refused or AnswerVerdict.INVALID
            # A phantom session (unknown user) has no code: the answer is still compared, against a fresh
            # random one, so a phantom's wrong answer takes as long as a real one's.
            expected = session.code if session.code is not None else secrets.token_hex(4)
            matched = hmac.compare_digest(expected.encode(), answer.encode())
            if matched and session.code is not None:
                del self._sessions[session_id]
                return AnswerVerdict.ACCEPTED
            session.attempts += 1
            if session.attempts >= attempt_cap:
                session.dead = True
            return AnswerVerdict.MISMATCH

    def clear(self) -> None:
        """Forget every session."""
        with self._lock:
            self._sessions.clear()

    def __len__(self) -> int:
        return len(self._sessions)

    def _sweep(self, now: float) -> None:
        # Caller holds the lock. Bounded work: only runs every few seconds.
        expired = [sid for sid, s in self._sessions.items() if now >= s.expires_at]
        for sid in expired:
            del self._sessions[sid]
        self._next_sweep = now + _SWEEP_INTERVAL_SECONDS
