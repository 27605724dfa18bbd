"""Turning a step's result into the journey's next edge: success, failure branch or abort.

The failure behavior decides between the failure branch and abort; abort replaces every detail with an error a
stranger may see (no hint whether the user exists, no internals), while the orchestrator still gets the full
failure for its own logs.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from .journey import StepConfiguration
from .model import ConnectionPolicy
from .outcomes import (
    Abort,
    EndUserError,
    ErrorCategory,
    FailureBehavior,
    FailureBranch,
    FailureCode,
    S,
    StepFailure,
    Success,
)

log = logging.getLogger(__name__)

_TRY_LATER = EndUserError(
    "TRY_AGAIN_LATER", "Something went wrong on our side. Please try again in a moment."
)
_NOT_SENT = EndUserError("OTP_NOT_SENT", "We could not send a code. Please check your details and try again.")
# Flow failures where the honest answer to the end user is "wait", whoever they are.
_WAIT = frozenset({FailureCode.IDENTIFIER_LOCKED, FailureCode.RESEND_TOO_SOON})
_NOT_VERIFIED = EndUserError("OTP_NOT_VERIFIED", "The code could not be verified. Please request a new code.")


def end_user_error_for(failure: StepFailure, *, validating: bool) -> EndUserError:
    """The stranger-safe error for an aborted step. Flow failures collapse into one message per step so an
    attacker cannot tell an unknown user from a wrong code or a missing phone number."""
    if failure.category is not ErrorCategory.FLOW_LOGIC or failure.code in _WAIT:
        return _TRY_LATER
    return _NOT_VERIFIED if validating else _NOT_SENT


def succeed(step: StepConfiguration, result: S) -> Success[S]:
    """The success outcome, with the output variable assigned."""
    variables: dict[str, dict[str, Any]] = {}
    if step.output_variable:
        variables[step.output_variable] = result.as_variable()
    return Success(result, variables)


def fail(step: StepConfiguration, failure: StepFailure, *, validating: bool) -> FailureBranch | Abort:
    """The failure-branch or abort outcome (per the step's failure behavior), with the error variable."""
    variables: dict[str, dict[str, Any]] = {}
    if step.error_output_variable:
        variables[step.error_output_variable] = failure.as_variable()
    if step.failure_behavior is FailureBehavior.ABORT:
        return Abort(end_user_error_for(failure, validating=validating), failure, variables)
    return FailureBranch(failure, variables)


def protected(failure: StepFailure, policy: ConnectionPolicy) -> StepFailure:
    """`failure` as the journey may see it: under enumeration protection, a flow failure (what depends on the
    user) without Cognito's error name (an answer with one and an answer without would tell a real user's
    judgement from a decoy's). Configuration and system failures keep it: they say nothing of the user."""
    if (
        not failure.cognito_error
        or not policy.user_enumeration_protection
        or failure.category is not ErrorCategory.FLOW_LOGIC
    ):
        return failure
    log.info(
        "enumeration protection: %s (%s) answered without Cognito's error",
        failure.code.value,
        failure.cognito_error,
    )
    return replace(failure, cognito_error="")
