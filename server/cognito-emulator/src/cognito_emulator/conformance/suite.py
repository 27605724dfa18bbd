"""The conformance suite: every rule of :mod:`.rules` checked against one cognito-idp endpoint.

The same checks run against the local emulator and a real pool; only where the pool and the codes come from
differs. Each check is bounded: a call budget and a deadline for the whole run, and at most
``max_codes_per_user`` codes sent to any one user (Cognito's default email sender allows about 50 a day).

What the suite records is redacted as it goes: every code, session, token and secret it meets is remembered
by a :class:`Redactor`, and observations hold only error names, messages, challenge names, masked
destinations and lengths. The report is checked against the redactor before it is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions

from ..settings import EmulatorSettings
from .codes import CodeSource, wait_for_new_code
from .pool import AppClient, PoolUnderTest, TestUser
from .rules import RULES, RULES_BY_ID, RuleResult, Verdict


class BudgetExhaustedError(Exception):
    """The run used its calls or its time; the rules not reached are reported as not checked."""


class CallBudget:
    """Counts every cognito-idp call of a run and stops the run at its call or time limit.

    Clean-up is never stopped (``closing``): what the suite created is deleted even after the budget ran out.
    """

    def __init__(self, max_calls: int, timeout_seconds: float) -> None:
        self.max_calls = max_calls
        self.timeout_seconds = timeout_seconds
        self.calls = 0
        self.closing = False
        self._deadline = time.monotonic() + timeout_seconds

    def spend(self) -> None:
        """Count one call, or raise :class:`BudgetExhaustedError`."""
        if not self.closing:
            if self.calls >= self.max_calls:
                raise BudgetExhaustedError(f"call budget of {self.max_calls} used")
            if time.monotonic() > self._deadline:
                raise BudgetExhaustedError(f"time budget of {self.timeout_seconds:.0f} s used")
        self.calls += 1

    def extend(self, seconds: float) -> None:
        """Move the deadline: for a wait the run chose to make (session expiry)."""
        self._deadline += seconds


class CountedCognito:
    """A boto3 cognito-idp client whose every call is counted by a :class:`CallBudget`."""

    def __init__(self, client: Any, budget: CallBudget) -> None:
        self._client = client
        self.budget = budget

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method) or name.startswith("_") or name in ("meta", "exceptions"):
            return method

        def counted(**request: Any) -> Any:
            self.budget.spend()
            return method(**request)

        return counted


@dataclass(frozen=True)
class SuiteLimits:
    """How much one run may do. Defaults fit a real pool: a few sign-ins per user, a couple of minutes."""

    max_calls: int = 150
    """Cognito API calls in the whole run (set-up and clean-up included)."""
    timeout_seconds: float = 240.0
    """Wall-clock budget of the checks (clean-up runs even after it)."""
    code_timeout_seconds: float = 60.0
    """How long to wait for one code to reach the code source."""
    max_codes_per_user: int = 3
    """Codes Cognito may send to one test user."""
    max_wrong_codes: int = 5
    """Wrong codes tried on one session when measuring the attempt cap (max_attempts allows up to 10)."""
    check_expiry: bool = False
    """Wait out AuthSessionValidity (3+ minutes on a real pool) to check that sessions expire."""


@dataclass
class Answer:
    """One API call's result: the response, or the error's name and message."""

    operation: str
    response: dict[str, Any] | None = None
    error: str | None = None
    message: str = ""

    @property
    def challenge(self) -> str | None:
        """The ChallengeName of a successful response."""
        return None if self.response is None else self.response.get("ChallengeName")

    @property
    def session(self) -> str:
        """The Session of a successful response ('' when none)."""
        return "" if self.response is None else str(self.response.get("Session") or "")

    @property
    def parameters(self) -> dict[str, str]:
        """ChallengeParameters of a successful response."""
        return dict((self.response or {}).get("ChallengeParameters") or {})


class Redactor:
    """Remembers every secret value of the run and checks that a text holds none of them."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def remember(self, *values: str | None) -> None:
        """Add values that must never appear in the report (short ones cannot be told from other text)."""
        self._values.update(v for v in values if v and len(v) >= 6)

    def leaks(self, text: str) -> bool:
        """Whether ``text`` contains any remembered value."""
        return any(value in text for value in self._values)


@dataclass
class ConformanceRun:
    """The state of one run: the pool, where codes come from, what to compare with, and the budget."""

    pool: PoolUnderTest
    codes: CodeSource
    expected: EmulatorSettings
    """The emulator settings the observations are compared with (the running emulator's, or the defaults)."""
    budget: CallBudget
    """The run's call and time budget (the pool's client is a :class:`CountedCognito` on it)."""
    limits: SuiteLimits = field(default_factory=SuiteLimits)
    emulator_control_url: str | None = None
    """The emulator's own URL when the endpoint is our emulator (for ``/_settings``); None against AWS."""
    email: str = "conformance@example.com"
    """Where test users' codes go; ``{role}`` in it is replaced by the user's role (plus-addressing)."""
    phone_number: str | None = None
    """An E.164 number whose SMS the code source can read; None skips the SMS rules."""
    redactor: Redactor = field(default_factory=Redactor)
    results: dict[str, RuleResult] = field(default_factory=dict)
    codes_sent: dict[str, int] = field(default_factory=dict)
    main_available: list[str] | None = None
    """AvailableChallenges offered to the main user (who has a password), for the PASSWORD rule."""

    # ---- recording -------------------------------------------------------------------------------------
    def record(
        self,
        rule_id: str,
        verdict: Verdict,
        observed: list[str],
        reason: str = "",
        *,
        emulator_setting: str | None = None,
        connection_setting: str | None = None,
    ) -> None:
        """Keep the first result of a rule (later checks of the same rule add observations only)."""
        existing = self.results.get(rule_id)
        if existing is not None:
            existing.observed.extend(observed)
            if verdict is Verdict.FAILED:
                existing.verdict, existing.reason = verdict, reason or existing.reason
            return
        self.results[rule_id] = RuleResult(
            RULES_BY_ID[rule_id],
            verdict,
            list(observed),
            reason,
            emulator_setting=emulator_setting,
            connection_setting=connection_setting,
        )

    def judge(
        self, rule_id: str, ok: bool, observed: list[str], why_not: str, **settings: str | None
    ) -> None:
        """Record passed when ``ok``, else failed with ``why_not``."""
        self.record(
            rule_id, Verdict.PASSED if ok else Verdict.FAILED, observed, "" if ok else why_not, **settings
        )

    def skip(self, rule_id: str, reason: str, observed: list[str] | None = None) -> None:
        """Record not checked, with the reason."""
        self.record(rule_id, Verdict.NOT_CHECKED, observed or [], reason)

    def finish(self) -> list[RuleResult]:
        """Every rule's result in catalogue order; rules never reached are not checked."""
        return [
            self.results.get(rule.id)
            or RuleResult(rule, Verdict.NOT_CHECKED, [], "not reached (budget or time)")
            for rule in RULES
        ]

    # ---- calls ---------------------------------------------------------------------------------------
    def call(self, operation: str, **request: Any) -> Answer:
        """One cognito-idp call; its secrets are remembered for redaction."""
        try:
            response: dict[str, Any] = getattr(self.pool.cognito, operation)(**request)
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            return Answer(
                operation, None, str(error.get("Code", "ClientError")), str(error.get("Message", ""))
            )
        result = response.get("AuthenticationResult") or {}
        self.redactor.remember(
            response.get("Session"),
            result.get("AccessToken"),
            result.get("IdToken"),
            result.get("RefreshToken"),
        )
        return Answer(operation, response)

    def start(
        self,
        user: TestUser | str,
        preferred: str | None = None,
        client: AppClient | None = None,
        *,
        secret_hash: str | bool | None = True,
    ) -> Answer:
        """InitiateAuth USER_AUTH; ``secret_hash=False`` leaves it out, a string sends that one instead."""
        client = client or self.pool.main_client
        username = user if isinstance(user, str) else user.username
        params = {"USERNAME": username}
        if preferred:
            params["PREFERRED_CHALLENGE"] = preferred
        hashed = client.secret_hash(username) if secret_hash is True else secret_hash or None
        if hashed:
            params["SECRET_HASH"] = hashed
        return self.call(
            "initiate_auth", ClientId=client.client_id, AuthFlow="USER_AUTH", AuthParameters=params
        )

    def respond(
        self,
        challenge: str,
        session: str,
        user: TestUser | str,
        client: AppClient | None = None,
        **responses: str,
    ) -> Answer:
        """RespondToAuthChallenge with USERNAME and SECRET_HASH added."""
        client = client or self.pool.main_client
        username = user if isinstance(user, str) else user.username
        answers = {"USERNAME": username, **responses}
        hashed = client.secret_hash(username)
        if hashed:
            answers["SECRET_HASH"] = hashed
        return self.call(
            "respond_to_auth_challenge",
            ClientId=client.client_id,
            ChallengeName=challenge,
            Session=session,
            ChallengeResponses=answers,
        )

    @contextmanager
    def sending_to(self, user: TestUser, medium: str = "EMAIL") -> Iterator[Callable[[], str | None]]:
        """Around a call that makes Cognito send a code: enforces the per-user limit, then yields a function
        that waits for the new code (None when none arrived in time)."""
        sent = self.codes_sent.get(user.username, 0)
        if sent >= self.limits.max_codes_per_user:
            raise SendLimitError(f"{user.role} already got {sent} codes (max_codes_per_user)")
        destination = (user.email if medium == "EMAIL" else user.phone_number) or ""
        before = self._latest(destination, medium)
        self.codes_sent[user.username] = sent + 1

        def new_code() -> str | None:
            code = wait_for_new_code(
                self.codes, destination, medium, before, self.limits.code_timeout_seconds
            )
            self.redactor.remember(code)
            return code

        yield new_code

    def _latest(self, destination: str, medium: str) -> str | None:
        code = self.codes.latest(destination, medium)
        self.redactor.remember(code)
        return code

    def wrong_code(self, right: str | None, n: int = 0) -> str:
        """A well-formed 8-digit code that is not ``right`` (distinct for each ``n``)."""
        candidate = f"{(12345678 + n * 1111111) % 10**8:08d}"
        return candidate if candidate != right else f"{(87654321 + n) % 10**8:08d}"

    def email_for(self, role: str) -> str:
        """The test address of ``role`` (``{role}`` filled in for plus-addressing)."""
        return self.email.replace("{role}", role)


class SendLimitError(Exception):
    """A check would send one code too many to a user; it is reported as not checked."""
