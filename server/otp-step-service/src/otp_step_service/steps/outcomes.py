"""What a step can end in: success, the failure branch, or abort, and the service's one failure taxonomy.

Journeys branch on failure codes, so each code's meaning, category and retryability are fixed here, once, and
translated to protobuf only at the transport edge.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeAlias, TypeVar


class Channel(enum.StrEnum):
    """The channel a one-time passcode is delivered by; values are Cognito's first-factor names' stems."""

    EMAIL = "EMAIL"
    SMS = "SMS"

    @property
    def challenge_name(self) -> str:
        """Cognito's challenge (and first factor) name for this channel: EMAIL_OTP or SMS_OTP."""
        return f"{self.value}_OTP"


class ErrorCategory(enum.StrEnum):
    """The three families of errors journey platforms keep apart."""

    FLOW_LOGIC = "FLOW_LOGIC"
    CONFIGURATION = "CONFIGURATION"
    SYSTEM = "SYSTEM"


class FailureBehavior(enum.StrEnum):
    """What the journey does when the step fails."""

    FAILURE_BRANCH = "FAILURE_BRANCH"
    ABORT = "ABORT"


class FailureCode(enum.StrEnum):
    """Stable failure codes (mirrored one to one by the proto's FailureCode)."""

    INVALID_IDENTIFIER = "INVALID_IDENTIFIER"
    USER_NOT_FOUND = "USER_NOT_FOUND"
    USER_DISABLED = "USER_DISABLED"
    USER_NOT_READY = "USER_NOT_READY"
    CHANNEL_NOT_AVAILABLE = "CHANNEL_NOT_AVAILABLE"
    INVALID_CODE = "INVALID_CODE"
    ATTEMPTS_EXHAUSTED = "ATTEMPTS_EXHAUSTED"
    CHALLENGE_NOT_FOUND = "CHALLENGE_NOT_FOUND"
    CHALLENGE_EXPIRED = "CHALLENGE_EXPIRED"
    IDENTIFIER_LOCKED = "IDENTIFIER_LOCKED"
    CONNECTION_MISCONFIGURED = "CONNECTION_MISCONFIGURED"
    THROTTLED = "THROTTLED"
    COGNITO_UNAVAILABLE = "COGNITO_UNAVAILABLE"
    COGNITO_TIMEOUT = "COGNITO_TIMEOUT"
    TRIGGER_FAILED = "TRIGGER_FAILED"
    INTERNAL = "INTERNAL"
    NOT_AUTHORIZED = "NOT_AUTHORIZED"
    RESEND_TOO_SOON = "RESEND_TOO_SOON"
    CHALLENGE_STORE_UNAVAILABLE = "CHALLENGE_STORE_UNAVAILABLE"
    DESTINATION_NOT_ALLOWED = "DESTINATION_NOT_ALLOWED"
    SEND_BUDGET_EXHAUSTED = "SEND_BUDGET_EXHAUSTED"

    @property
    def category(self) -> ErrorCategory:
        """The family this code belongs to."""
        return _SPECS[self][0]

    @property
    def retryable(self) -> bool:
        """Whether running the step again, unchanged, can succeed."""
        return _SPECS[self][1]


_F, _C, _S = ErrorCategory.FLOW_LOGIC, ErrorCategory.CONFIGURATION, ErrorCategory.SYSTEM
_SPECS: Mapping[FailureCode, tuple[ErrorCategory, bool]] = {
    FailureCode.INVALID_IDENTIFIER: (_F, False),
    FailureCode.USER_NOT_FOUND: (_F, False),
    FailureCode.USER_DISABLED: (_F, False),
    FailureCode.USER_NOT_READY: (_F, False),
    FailureCode.CHANNEL_NOT_AVAILABLE: (_F, False),
    # The user may type another code, but running the step unchanged (same code) cannot succeed.
    FailureCode.INVALID_CODE: (_F, False),
    FailureCode.ATTEMPTS_EXHAUSTED: (_F, False),
    FailureCode.CHALLENGE_NOT_FOUND: (_F, False),
    FailureCode.CHALLENGE_EXPIRED: (_F, False),
    FailureCode.IDENTIFIER_LOCKED: (_F, False),
    FailureCode.CONNECTION_MISCONFIGURED: (_C, False),
    FailureCode.THROTTLED: (_S, True),
    FailureCode.COGNITO_UNAVAILABLE: (_S, True),
    FailureCode.COGNITO_TIMEOUT: (_S, True),
    FailureCode.TRIGGER_FAILED: (_S, False),
    FailureCode.INTERNAL: (_S, False),
    FailureCode.NOT_AUTHORIZED: (_F, False),
    FailureCode.RESEND_TOO_SOON: (_F, True),
    FailureCode.CHALLENGE_STORE_UNAVAILABLE: (_S, True),
    FailureCode.DESTINATION_NOT_ALLOWED: (_F, False),
    FailureCode.SEND_BUDGET_EXHAUSTED: (_S, True),
}


@dataclass(frozen=True, slots=True)
class StepFailure:
    """The step failed. `message` is for journey authors and operators: never a code, session, token or secret."""

    code: FailureCode
    message: str
    attempts_remaining: int | None = None
    cognito_error: str = ""
    retry_after_seconds: int | None = None

    @property
    def category(self) -> ErrorCategory:
        """The failure's family."""
        return self.code.category

    @property
    def retryable(self) -> bool:
        """Whether the same step, run again, can succeed."""
        return self.code.retryable

    def as_variable(self) -> dict[str, Any]:
        """The error object written into the journey's error output variable."""
        error: dict[str, Any] = {
            "code": self.code.value,
            "category": self.category.value,
            "retryable": self.retryable,
            "message": self.message,
        }
        if self.attempts_remaining is not None:
            error["attempts_remaining"] = self.attempts_remaining
        if self.cognito_error:
            error["cognito_error"] = self.cognito_error
        if self.retry_after_seconds is not None:
            error["retry_after_seconds"] = self.retry_after_seconds
        return error


@dataclass(frozen=True, slots=True)
class EndUserError:
    """The error an aborted journey shows its end user: safe for a stranger (no user enumeration, no
    internals). The proto calls it `ClientError` (the journey's client)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class CodeSent:
    """Generate's result: Cognito sent the code (or, under enumeration protection, seemed to)."""

    channel: Channel
    masked_destination: str
    expires_at: datetime
    max_attempts: int

    def as_variable(self) -> dict[str, Any]:
        """The result written into the journey's output variable."""
        return {
            "delivery_medium": self.channel.value,
            "masked_destination": self.masked_destination,
            "expires_at": self.expires_at.isoformat().replace("+00:00", "Z"),
            "max_attempts": self.max_attempts,
        }


@dataclass(frozen=True, slots=True)
class CognitoTokens:
    """Tokens from a successful sign-in; returned to callers only when the connection allows it."""

    id_token: str
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str

    def __repr__(self) -> str:
        # Keeps tokens out of tracebacks, logs and debug output.
        return "CognitoTokens(<redacted>)"


@dataclass(frozen=True, slots=True)
class CodeVerified:
    """Validate's result: the code was right; everything a just-in-time migration needs, from verified
    sources."""

    sub: str
    username: str
    claims: Mapping[str, Any]
    attributes: Mapping[str, str]
    channel: Channel
    authenticated_at: datetime
    tokens: CognitoTokens | None = None

    def as_variable(self) -> dict[str, Any]:
        """The result written into the journey's output variable."""
        result: dict[str, Any] = {
            "sub": self.sub,
            "username": self.username,
            "claims": dict(self.claims),
            "attributes": dict(self.attributes),
            "verified_medium": self.channel.value,
            "authenticated_at": self.authenticated_at.isoformat().replace("+00:00", "Z"),
        }
        if self.tokens is not None:
            result["tokens"] = {
                "id_token": self.tokens.id_token,
                "access_token": self.tokens.access_token,
                "refresh_token": self.tokens.refresh_token,
                "expires_in": self.tokens.expires_in,
                "token_type": self.tokens.token_type,
            }
        return result


S = TypeVar("S", CodeSent, CodeVerified)

Variables = Mapping[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Success(Generic[S]):
    """The step succeeded: the journey continues on the next edge; the output variable holds `result`."""

    result: S
    variables: Variables = field(default_factory=dict)
    kind: ClassVar[str] = "success"

    @property
    def failed(self) -> None:
        """No failure behind a success."""
        return None


@dataclass(frozen=True, slots=True)
class FailureBranch:
    """The step failed and the journey takes its failure branch; the error output variable holds `failure`."""

    failure: StepFailure
    variables: Variables = field(default_factory=dict)
    kind: ClassVar[str] = "failure"

    @property
    def failed(self) -> StepFailure:
        """The failure."""
        return self.failure


@dataclass(frozen=True, slots=True)
class Abort:
    """The step failed with failure behavior ABORT: the journey ends and shows its end user `end_user_error`;
    `failure` goes to the orchestrator's logs."""

    end_user_error: EndUserError
    failure: StepFailure
    variables: Variables = field(default_factory=dict)
    kind: ClassVar[str] = "abort"

    @property
    def failed(self) -> StepFailure:
        """The failure behind the abort."""
        return self.failure


# Exactly one of the three, by construction: branch with `match outcome: case Success(): ...`.
StepOutcome: TypeAlias = Success[S] | FailureBranch | Abort
