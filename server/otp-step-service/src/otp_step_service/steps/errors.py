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


class StepNotRunError(OtpStepError):
    """The step could not start and did nothing a repeat could double: no code was sent or judged, and what
    the store counted for it is given back before it answers (a store that fails that too keeps one attempt
    or one maybe-sent code counted, never more). The call ends with UNAVAILABLE, `reason` in its
    google.rpc.ErrorInfo and `retry_after_seconds` in its google.rpc.RetryInfo, so a client's retry policy
    makes it again by itself."""

    status = RpcStatus.UNAVAILABLE
    reason: ClassVar[str] = ""
    # Whether a retry within the same call (the client's retry policy, same deadline) may succeed.
    retry_within_call: ClassVar[bool] = True

    def __init__(self, message: str, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class StoreUnavailableError(StepNotRunError):
    """The challenge store failed before Cognito was asked (a failover, a partition): the step did not run."""

    reason = "CHALLENGE_STORE_UNAVAILABLE"

    def __init__(self, cause: ChallengeStoreError) -> None:
        # A Redis failover takes seconds; the first retries are cheap, and the client's backoff grows.
        super().__init__("the challenge store could not be reached: retry", 0.2)
        self.__cause__ = cause


class ExecutionInFlightError(StepNotRunError):
    """A retried Generate found its execution's first attempt still sending (its reservation's lease lives),
    and the caller's deadline ended before that attempt settled: nothing was sent by this call. Retry after
    `retry_after_seconds`: by then the first attempt has answered, or its lease has run out and a retry takes
    its place."""

    reason = "EXECUTION_IN_FLIGHT"
    retry_within_call = False  # it waited for as long as the deadline allows

    def __init__(self, lease_seconds: float) -> None:
        super().__init__(
            "this step execution is being sent by an earlier attempt: retry with the same "
            "step_execution_id after the RetryInfo delay",
            max(lease_seconds, 0.05),
        )


class TokenVerificationError(OtpStepError):
    """An ID token failed verification (signature, exp, aud, iss or token_use)."""


class UnknownConnectionError(OtpStepError, LookupError):
    """The step names a connection that is not configured. The message does not list the configured names."""

    status = RpcStatus.NOT_FOUND

    def __init__(self, name: str) -> None:
        super().__init__(f"no connection named {name!r} is configured")
        self.name = name
