"""What each kind of Cognito error means for a step (the table in the docs' "Outcome and error codes")."""

from __future__ import annotations

from collections.abc import Mapping

from .model import CognitoError, CognitoErrorKind
from .outcomes import FailureCode, StepFailure

# Meanings shared by Generate and Validate; each step overrides what is specific to it.
_COMMON: Mapping[CognitoErrorKind, tuple[FailureCode, str]] = {
    CognitoErrorKind.USER_NOT_FOUND: (FailureCode.USER_NOT_FOUND, "no such user in the pool"),
    CognitoErrorKind.USER_DISABLED: (FailureCode.USER_DISABLED, "the user is disabled"),
    CognitoErrorKind.USER_NOT_READY: (
        FailureCode.USER_NOT_READY,
        "the user must confirm the account or reset the password first",
    ),
    CognitoErrorKind.SECRET_INVALID: (
        FailureCode.CONNECTION_MISCONFIGURED,
        "Cognito rejected the SECRET_HASH: the connection's client secret does not match the app client "
        "(check client_secret_env / client_secret_file)",
    ),
    CognitoErrorKind.NOT_AUTHORIZED: (FailureCode.NOT_AUTHORIZED, "Cognito refused to sign this user in"),
    CognitoErrorKind.SESSION_INVALID: (
        FailureCode.CHALLENGE_EXPIRED,
        "Cognito no longer accepts this challenge; run Generate again",
    ),
    CognitoErrorKind.CODE_EXPIRED: (FailureCode.CHALLENGE_EXPIRED, "the code expired; run Generate again"),
    CognitoErrorKind.CODE_MISMATCH: (FailureCode.INVALID_CODE, "the code is wrong"),
    CognitoErrorKind.THROTTLED: (FailureCode.THROTTLED, "Cognito throttled the request; retry with backoff"),
    CognitoErrorKind.UNAVAILABLE: (FailureCode.COGNITO_UNAVAILABLE, "Cognito failed or could not be reached"),
    CognitoErrorKind.TIMEOUT: (FailureCode.COGNITO_TIMEOUT, "Cognito did not answer in time"),
    CognitoErrorKind.MISCONFIGURED: (FailureCode.CONNECTION_MISCONFIGURED, "the connection is misconfigured"),
    CognitoErrorKind.TRIGGER_FAILED: (FailureCode.TRIGGER_FAILED, "a Cognito Lambda trigger failed"),
    CognitoErrorKind.UNEXPECTED: (FailureCode.INTERNAL, "Cognito answered in an unexpected way"),
}


def failure_for(error: CognitoError) -> StepFailure:
    """The failure a Cognito error stands for, its message naming the Cognito error and Cognito's detail."""
    code, meaning = _COMMON[error.kind]
    message = meaning if not error.detail else f"{meaning} ({error.detail})"
    return StepFailure(code=code, message=message, cognito_error=error.cognito_error)
