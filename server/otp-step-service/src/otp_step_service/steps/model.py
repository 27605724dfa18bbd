"""The domain's types that are not outcomes: the end user, Cognito's answers and errors, connection policy.

What the steps need from the outside world is in `ports`; what a step ends in is in `outcomes`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import OtpStepError


@dataclass(frozen=True, slots=True)
class EndUser:
    """The end user's client, for Cognito's threat protection."""

    ip_address: str = ""
    user_agent: str = ""
    encoded_data: str = ""


@dataclass(frozen=True, slots=True)
class AuthChallenge:
    """A challenge Cognito answered USER_AUTH (or SELECT_CHALLENGE) with. `session` is a secret."""

    name: str
    session: str
    username: str
    destination: str = ""
    available: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"AuthChallenge({self.name}, session=<redacted>)"


class CognitoErrorKind(enum.Enum):
    """Cognito's errors, sorted by what a step can do about them."""

    USER_NOT_FOUND = "user_not_found"
    USER_DISABLED = "user_disabled"
    SESSION_INVALID = "session_invalid"  # expired, used or dead session
    SECRET_INVALID = "secret_invalid"  # SECRET_HASH wrong or missing
    NOT_AUTHORIZED = "not_authorized"  # any other NotAuthorizedException
    CODE_MISMATCH = "code_mismatch"
    CODE_EXPIRED = "code_expired"
    USER_NOT_READY = "user_not_ready"  # UserNotConfirmed, PasswordResetRequired
    THROTTLED = "throttled"
    UNAVAILABLE = "unavailable"  # InternalErrorException, connection failures
    TIMEOUT = "timeout"
    MISCONFIGURED = "misconfigured"  # InvalidParameter, ResourceNotFound, role policies
    TRIGGER_FAILED = "trigger_failed"
    UNEXPECTED = "unexpected"


# Cognito answers these before it acts [doc: TooManyRequestsException is a rejection; the others refuse the
# request itself]: no code was sent and none was judged.
ANSWERED_BEFORE_ACTING = frozenset(
    {
        CognitoErrorKind.THROTTLED,
        CognitoErrorKind.SECRET_INVALID,
        CognitoErrorKind.MISCONFIGURED,
        CognitoErrorKind.USER_NOT_FOUND,
        CognitoErrorKind.USER_DISABLED,
        CognitoErrorKind.USER_NOT_READY,
        CognitoErrorKind.NOT_AUTHORIZED,
        CognitoErrorKind.SESSION_INVALID,
        CognitoErrorKind.CODE_EXPIRED,
    }
)


class CognitoError(OtpStepError):
    """A Cognito call failed. `detail` is returned to the orchestrator: Cognito's own error message (Cognito
    does not echo codes, sessions or secrets in it) or a fixed text for a transport failure."""

    def __init__(
        self, kind: CognitoErrorKind, cognito_error: str, detail: str, reached_cognito: bool = True
    ) -> None:
        super().__init__(f"{cognito_error}: {detail}")
        self.kind = kind
        self.cognito_error = cognito_error
        self.detail = detail
        # False only when the request certainly never reached Cognito (no connection, no time left): only
        # then is it certain that no code was sent or judged.
        self.reached_cognito = reached_cognito

    @property
    def certainly_not_acted(self) -> bool:
        """True when Cognito certainly neither sent nor judged a code: the request never left, or Cognito
        refused it before acting. A timeout, a 5xx or a dropped connection may come after Cognito acted."""
        return not self.reached_cognito or self.kind in ANSWERED_BEFORE_ACTING


@dataclass(slots=True)
class CognitoRequests:
    """What one step has sent to Cognito so far, kept by the gateway as requests leave.

    When a step is cancelled (the caller went away), no error says whether Cognito got the request: this does.
    A request counts as sent from the moment it is handed to the HTTP connection, whether or not an answer
    comes back.
    """

    sent: int = 0


class CheckStatus(enum.Enum):
    """The result of one connection self-test check."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class ConnectionCheck:
    """One finding of the connection self-test."""

    name: str
    status: CheckStatus
    detail: str


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    """The per-connection choices the steps apply. Built from the validated connections file, where every
    default is defined (config.connections.ConnectionConfig); the domain repeats none of them."""

    name: str
    max_attempts: int
    session_validity_seconds: int
    user_enumeration_protection: bool
    return_tokens: bool
    default_phone_region: str | None
    migration_attributes: tuple[str, ...]
    reveal_identifiers: bool
    lockout_threshold: int
    lockout_window_seconds: int
    resend_cooldown_seconds: int
    send_limit: int
    send_window_seconds: int
    sms_countries: tuple[str, ...]
    send_budgets: tuple[tuple[int, int], ...]  # (codes, window seconds) per connection: the spend breaker
    sms_prefix_digits: int
    sms_prefix_limit: int | None
    sms_prefix_window_seconds: int
    ip_send_limit: int | None
    ip_send_window_seconds: int
    # (codes, window seconds) per tenant (journey.tenant_id) of the connection
    tenant_send_budgets: tuple[tuple[int, int], ...] = ()
