"""What a step call ended with, in one word the fleet tests can count and assert on.

A store failure reaches the caller in one of two shapes, and both are the same retryable thing: the failure
outcome CHALLENGE_STORE_UNAVAILABLE (retryable), or the gRPC status UNAVAILABLE whose ErrorInfo reason is
CHALLENGE_STORE_UNAVAILABLE (with RetryInfo; the shipped client config retries Generate on it by itself).
Both are "store-unavailable" here. Anything untyped (INTERNAL, UNKNOWN, a failure outcome not marked
retryable where a retryable one belongs) keeps its own name, so an assertion on the set of kinds shows it."""

from __future__ import annotations

from collections.abc import Callable

from otp_step_client import StepExecutorError
from stepexecutor.v1 import step_executor_pb2 as pb

OK = "ok"
STORE_UNAVAILABLE = "store-unavailable"
COGNITO_TIMEOUT = "cognito-timeout"
COGNITO_UNAVAILABLE = "cognito-unavailable"

# The retryable system failures a fault may cause: the caller (or the journey) tries again later.
TYPED_RETRYABLE = frozenset({STORE_UNAVAILABLE, COGNITO_TIMEOUT, COGNITO_UNAVAILABLE})

_RETRYABLE_FAILURES = {
    pb.FAILURE_CODE_CHALLENGE_STORE_UNAVAILABLE: STORE_UNAVAILABLE,
    pb.FAILURE_CODE_COGNITO_TIMEOUT: COGNITO_TIMEOUT,
    pb.FAILURE_CODE_COGNITO_UNAVAILABLE: COGNITO_UNAVAILABLE,
}


def outcome_kind(response: pb.GenerateOtpResponse | pb.ValidateOtpResponse) -> str:
    """ "ok", one of TYPED_RETRYABLE, or the failure code's name (e.g. FAILURE_CODE_INVALID_CODE)."""
    if response.WhichOneof("outcome") == "success":
        return OK
    failure = response.failure
    kind = _RETRYABLE_FAILURES.get(failure.code)
    if kind is not None and failure.retryable:
        return kind
    return pb.FailureCode.Name(failure.code)


def status_kind(error: StepExecutorError) -> str:
    """A non-OK gRPC status: "store-unavailable" for the typed UNAVAILABLE of a store failure, else
    "status <CODE> <reason>" (INTERNAL, UNKNOWN, DEADLINE_EXCEEDED... stay visible as themselves)."""
    if error.code.name == "UNAVAILABLE" and error.reason == "CHALLENGE_STORE_UNAVAILABLE":
        return STORE_UNAVAILABLE
    return f"status {error.code.name} {error.reason}".strip()


def step_kind(call: Callable[[], pb.GenerateOtpResponse | pb.ValidateOtpResponse]) -> str:
    """Run one step call; the kind of its outcome or of its status."""
    try:
        return outcome_kind(call())
    except StepExecutorError as error:
        return status_kind(error)
