"""What the steps need from the outside world, as interfaces: Cognito and ID-token verification.

Adapters (boto3, PyJWT) implement these; the steps never see boto3 or grpc types. Cognito's errors arrive
already sorted into `CognitoErrorKind`, so each step decides what an error means for a journey.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .deadline import Deadline
from .outcomes import Channel, CognitoTokens


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


class CognitoError(Exception):
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


class CognitoGateway(Protocol):
    """Cognito's passwordless sign-in for one connection (pool + app client + secret)."""

    def start_user_auth(
        self, username: str, preferred: Channel, end_user: EndUser, deadline: Deadline
    ) -> AuthChallenge:
        """InitiateAuth USER_AUTH with PREFERRED_CHALLENGE. Never retried on a fault that may have sent a code."""

    def select_challenge(
        self, username: str, session: str, channel: Channel, end_user: EndUser, deadline: Deadline
    ) -> AuthChallenge:
        """Answer SELECT_CHALLENGE with the channel's challenge; Cognito then sends the code."""

    def answer_otp(
        self, username: str, session: str, channel: Channel, code: str, end_user: EndUser, deadline: Deadline
    ) -> CognitoTokens:
        """Answer EMAIL_OTP / SMS_OTP with the code; tokens on success."""

    def user_attributes(self, username: str, tokens: CognitoTokens, deadline: Deadline) -> dict[str, str]:
        """The user's attributes (GetUser with the access token, or AdminGetUser)."""

    def self_test(self, deadline: Deadline) -> Sequence[ConnectionCheck]:
        """Check that the connection can run the steps, without sending any code."""

    def warm_up(self) -> None:
        """Prepare what the first step would otherwise pay for (clients, connections)."""


class TokenVerificationError(Exception):
    """An ID token failed verification (signature, exp, aud, iss or token_use)."""


class IdTokenVerifier(Protocol):
    """Verifies ID tokens of one pool and app client."""

    def verify(self, id_token: str) -> Mapping[str, Any]:
        """The verified claims, or TokenVerificationError."""

    def warm_up(self) -> None:
        """Fetch the pool's signing keys ahead of the first Validate."""


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    """The per-connection choices the steps apply (validated from the connections file)."""

    name: str
    max_attempts: int = 3
    session_validity_seconds: int = 180
    user_enumeration_protection: bool = True
    return_tokens: bool = False
    default_phone_region: str | None = None
    migration_attributes: tuple[str, ...] = ("*",)
    reveal_identifiers: bool = False
    lockout_threshold: int = 10
    lockout_window_seconds: int = 900
    resend_cooldown_seconds: int = 30
    send_limit: int = 10
    send_window_seconds: int = 900


@dataclass(frozen=True, slots=True)
class Connection:
    """A configured Cognito connection: its policy and the adapters that reach its pool."""

    policy: ConnectionPolicy
    gateway: CognitoGateway
    verifier: IdTokenVerifier
