"""Cognito's failures sorted into the domain's `CognitoError` kinds, with details safe to return.

Which error means what follows the API reference; the NotAuthorizedException messages told apart here are
observed [obs], and an unknown message falls back to the generic kind, never to a wrong specific one.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

import aiohttp
import botocore.exceptions

from otp_step_service.steps.model import CognitoError, CognitoErrorKind

_CONFIGURATION_ERRORS = frozenset(
    {
        "InvalidParameterException",
        "ResourceNotFoundException",
        "InvalidSmsRoleAccessPolicyException",
        "InvalidSmsRoleTrustRelationshipException",
        "InvalidEmailRoleAccessPolicyException",
        "InvalidUserPoolConfigurationException",
        "UnsupportedOperationException",
        "ForbiddenException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "MFAMethodNotFoundException",
    }
)
_KINDS: Mapping[str, CognitoErrorKind] = {
    "UserNotFoundException": CognitoErrorKind.USER_NOT_FOUND,
    "CodeMismatchException": CognitoErrorKind.CODE_MISMATCH,
    "ExpiredCodeException": CognitoErrorKind.CODE_EXPIRED,
    "UserNotConfirmedException": CognitoErrorKind.USER_NOT_READY,
    "PasswordResetRequiredException": CognitoErrorKind.USER_NOT_READY,
    "TooManyRequestsException": CognitoErrorKind.THROTTLED,
    "InternalErrorException": CognitoErrorKind.UNAVAILABLE,
    "UnexpectedLambdaException": CognitoErrorKind.TRIGGER_FAILED,
    "UserLambdaValidationException": CognitoErrorKind.TRIGGER_FAILED,
    "InvalidLambdaResponseException": CognitoErrorKind.TRIGGER_FAILED,
    **{name: CognitoErrorKind.MISCONFIGURED for name in _CONFIGURATION_ERRORS},
}


def _never_connected(exc: botocore.exceptions.EndpointConnectionError) -> bool:
    """aiobotocore reports a refused connect and a connection reset after sending alike; only the first
    certainly kept the request from Cognito."""
    cause = exc.kwargs.get("error")
    return isinstance(cause, aiohttp.ClientConnectorError | socket.gaierror)


def classify(exc: Exception) -> CognitoError:
    """Sort a botocore failure into a CognitoError whose detail is safe to return."""
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        name = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if name == "NotAuthorizedException":
            return CognitoError(_not_authorized_kind(message), name, message)
        kind = _KINDS.get(name)
        if kind is None:
            kind = CognitoErrorKind.UNAVAILABLE if status >= 500 else CognitoErrorKind.UNEXPECTED
        return CognitoError(kind, name, message)
    if isinstance(exc, botocore.exceptions.ConnectTimeoutError):
        return CognitoError(
            CognitoErrorKind.TIMEOUT,
            type(exc).__name__,
            "no connection within the time budget",
            reached_cognito=False,
        )
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return CognitoError(
            CognitoErrorKind.UNAVAILABLE,
            type(exc).__name__,
            "Cognito could not be reached",
            reached_cognito=not _never_connected(exc),
        )
    if isinstance(exc, botocore.exceptions.ReadTimeoutError):
        return CognitoError(CognitoErrorKind.TIMEOUT, type(exc).__name__, "no answer within the time budget")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return CognitoError(
            CognitoErrorKind.MISCONFIGURED,
            "NoCredentialsError",
            "the admin API needs IAM credentials (standard AWS credential chain)",
            reached_cognito=False,
        )
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        # Dropped connections, broken responses: Cognito is out of reach, perhaps after acting.
        return CognitoError(CognitoErrorKind.UNAVAILABLE, type(exc).__name__, "Cognito could not be reached")
    raise exc


def _not_authorized_kind(message: str) -> CognitoErrorKind:
    # NotAuthorizedException covers several situations told apart only by message [obs]; unknown messages
    # fall back to the generic kind, never to a wrong specific one.
    text = message.lower()
    if "secret" in text:
        return CognitoErrorKind.SECRET_INVALID
    if "disabled" in text:
        return CognitoErrorKind.USER_DISABLED
    if "session" in text:
        return CognitoErrorKind.SESSION_INVALID
    return CognitoErrorKind.NOT_AUTHORIZED
