"""The service's one exception root, and the gRPC status each kind of error stands for where it has one.

Errors are raised inside the service and translated once, at the transport edge: an error that reaches a
caller names its status with `RpcStatus` (the domain's own enum, so it imports no gRPC), and the servicer
answers with that status and the error's rich details. A step that ran never raises to the caller: its
failures are outcomes (see `outcomes.FailureCode`).
"""

from __future__ import annotations

import enum
from typing import ClassVar


class RpcStatus(enum.StrEnum):
    """The gRPC status codes the service answers calls that cannot run with (names as in grpc.StatusCode)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"


class OtpStepError(Exception):
    """Root of every error the service raises. `status` is the gRPC status it maps to, when it reaches a caller."""

    status: ClassVar[RpcStatus | None] = None


class ConfigurationError(OtpStepError):
    """The service's settings or connections file are wrong; the message names each field and the fix."""


class ChallengeStoreError(OtpStepError):
    """The challenge store failed or could not be reached (a shared store's network, say)."""


class TokenVerificationError(OtpStepError):
    """An ID token failed verification (signature, exp, aud, iss or token_use)."""


class UnknownConnectionError(OtpStepError, LookupError):
    """The step names a connection that is not configured. The message does not list the configured names."""

    status = RpcStatus.NOT_FOUND

    def __init__(self, name: str) -> None:
        super().__init__(f"no connection named {name!r} is configured")
        self.name = name
