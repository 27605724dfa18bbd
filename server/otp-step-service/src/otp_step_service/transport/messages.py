"""Protobuf ⇄ domain: request validation (google.rpc.BadRequest field violations) and outcome mapping.

The only module besides the servicer that knows the generated types; the steps never see them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from stepexecutor.v1 import step_executor_pb2 as pb

from otp_step_service.app.execution import Executed
from otp_step_service.steps.errors import OtpStepError, RpcStatus
from otp_step_service.steps.event_data import EventData
from otp_step_service.steps.journey import (
    EventDataMode,
    GenerateRequest,
    JourneyContext,
    StepConfiguration,
    ValidateRequest,
)
from otp_step_service.steps.model import CheckStatus, ConnectionCheck, EndUser
from otp_step_service.steps.outcomes import (
    Abort,
    Channel,
    CodeSent,
    CodeVerified,
    ErrorCategory,
    FailureBehavior,
    FailureBranch,
    FailureCode,
    StepFailure,
    Success,
)

MAX_ID = 256
MAX_IDENTIFIER = 320
MAX_CODE = 32
MAX_SCOPES = 32
# The reported event data is cut to 8 KiB anyway; a larger payload is a mistake, refused before any work.
MAX_CUSTOM_PAYLOAD = 64 * 1024
# A journey's payload is a few levels deep; protobuf's parser refuses ~48 levels of Struct itself (then the
# request is INVALID_ARGUMENT before it reaches here). A stated, lower bound keeps the redaction walk shallow.
MAX_PAYLOAD_DEPTH = 32
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")
_CONTROL = re.compile(r"[\x00-\x1f]")
_SCOPE = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]{1,128}$")  # RFC 6749 scope-token

_CHANNELS = {pb.OTP_CHANNEL_EMAIL: Channel.EMAIL, pb.OTP_CHANNEL_SMS: Channel.SMS}
_BEHAVIORS = {
    pb.FAILURE_BEHAVIOR_UNSPECIFIED: FailureBehavior.FAILURE_BRANCH,
    pb.FAILURE_BEHAVIOR_FAILURE_BRANCH: FailureBehavior.FAILURE_BRANCH,
    pb.FAILURE_BEHAVIOR_ABORT: FailureBehavior.ABORT,
}
_MODES = {
    pb.EVENT_DATA_MODE_UNSPECIFIED: EventDataMode.NONE,
    pb.EVENT_DATA_MODE_NONE: EventDataMode.NONE,
    pb.EVENT_DATA_MODE_STEP_INPUT_OUTPUT: EventDataMode.STEP_INPUT_OUTPUT,
    pb.EVENT_DATA_MODE_CUSTOM_PAYLOAD: EventDataMode.CUSTOM_PAYLOAD,
}
_MEDIUMS = {Channel.EMAIL: pb.DELIVERY_MEDIUM_EMAIL, Channel.SMS: pb.DELIVERY_MEDIUM_SMS}
_CATEGORIES = {
    ErrorCategory.FLOW_LOGIC: pb.ERROR_CATEGORY_FLOW_LOGIC,
    ErrorCategory.CONFIGURATION: pb.ERROR_CATEGORY_CONFIGURATION,
    ErrorCategory.SYSTEM: pb.ERROR_CATEGORY_SYSTEM,
}
_FAILURE_CODES = {code: pb.FailureCode.Value(f"FAILURE_CODE_{code.value}") for code in FailureCode}
_EVENT_DATA_MODES = {mode: pb.EventDataMode.Value(f"EVENT_DATA_MODE_{mode.value}") for mode in EventDataMode}
_CHECKS = {
    CheckStatus.PASSED: pb.CONNECTION_CHECK_STATUS_PASSED,
    CheckStatus.FAILED: pb.CONNECTION_CHECK_STATUS_FAILED,
    CheckStatus.SKIPPED: pb.CONNECTION_CHECK_STATUS_SKIPPED,
}


class InvalidRequestError(OtpStepError, ValueError):
    """The request is malformed; `violations` maps each field path to what is wrong with it."""

    status = RpcStatus.INVALID_ARGUMENT

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {why}" for field, why in violations))
        self.violations = violations


class _Checker:
    def __init__(self) -> None:
        self.violations: list[tuple[str, str]] = []

    def required(self, field: str, value: str, limit: int = MAX_ID) -> str:
        if not value.strip():
            self.violations.append((field, "required"))
        elif len(value) > limit:
            self.violations.append((field, f"longer than {limit} characters"))
        elif _CONTROL.search(value):
            self.violations.append((field, "contains control characters"))
        return value.strip()

    def optional(self, field: str, value: str, limit: int = MAX_ID) -> str:
        return self.required(field, value, limit) if value else ""

    def raise_if_any(self) -> None:
        if self.violations:
            raise InvalidRequestError(self.violations)


def _journey(message: pb.JourneyContext, has: bool, check: _Checker) -> JourneyContext:
    if not has:
        check.violations.append(("journey", "required"))
    end_user = message.end_user
    if end_user.ip_address:
        try:
            ipaddress.ip_address(end_user.ip_address)
        except ValueError:
            check.violations.append(("journey.end_user.ip_address", "not an IPv4 or IPv6 address"))
    check.optional("journey.end_user.user_agent", end_user.user_agent, 1024)
    check.optional("journey.end_user.encoded_data", end_user.encoded_data, 8192)
    return JourneyContext(
        journey_id=check.required("journey.journey_id", message.journey_id),
        journey_run_id=check.required("journey.journey_run_id", message.journey_run_id),
        step_id=check.required("journey.step_id", message.step_id),
        tenant_id=check.optional("journey.tenant_id", message.tenant_id),
        step_execution_id=check.optional("journey.step_execution_id", message.step_execution_id),
        end_user=EndUser(end_user.ip_address, end_user.user_agent, end_user.encoded_data),
    )


def _step(
    message: pb.StepConfiguration, has: bool, check: _Checker, *, channel_required: bool
) -> StepConfiguration:
    if not has:
        check.violations.append(("step", "required"))
    channel = _CHANNELS.get(message.otp_channel)
    if message.otp_channel != pb.OTP_CHANNEL_UNSPECIFIED and channel is None:
        check.violations.append(("step.otp_channel", f"unknown value {message.otp_channel}"))
    elif channel is None and channel_required:
        check.violations.append(("step.otp_channel", "required: OTP_CHANNEL_EMAIL or OTP_CHANNEL_SMS"))
    if len(message.scopes) > MAX_SCOPES:
        check.violations.append(("step.scopes", f"more than {MAX_SCOPES} scopes"))
    for i, scope in enumerate(message.scopes):
        if not _SCOPE.match(scope):
            check.violations.append((f"step.scopes[{i}]", "not an OAuth scope token"))
    for field, name in (
        ("step.output_variable", message.output_variable),
        ("step.error_output_variable", message.error_output_variable),
    ):
        if name and not _VARIABLE.match(name):
            check.violations.append((field, "not a variable name (letters, digits, _ . -; max 128)"))
    behavior = _BEHAVIORS.get(message.failure_behavior)
    if behavior is None:
        check.violations.append(("step.failure_behavior", f"unknown value {message.failure_behavior}"))
    mode = _MODES.get(message.event_data.mode)
    if mode is None:
        check.violations.append(("step.event_data.mode", f"unknown value {message.event_data.mode}"))
    payload: dict[str, Any] = {}
    if mode is EventDataMode.CUSTOM_PAYLOAD:
        custom = message.event_data.custom_payload
        if custom.ByteSize() > MAX_CUSTOM_PAYLOAD:
            check.violations.append(
                ("step.event_data.custom_payload", f"larger than {MAX_CUSTOM_PAYLOAD} bytes")
            )
        elif _depth(custom) > MAX_PAYLOAD_DEPTH:
            check.violations.append(
                ("step.event_data.custom_payload", f"nested deeper than {MAX_PAYLOAD_DEPTH} levels")
            )
        else:
            try:
                payload = json_format.MessageToDict(custom)
            except ValueError:  # NaN and Infinity have no JSON form
                check.violations.append(
                    ("step.event_data.custom_payload", "holds a number JSON cannot carry")
                )
    return StepConfiguration(
        connection=check.required("step.connection", message.connection, 64),
        user_identifier=check.required("step.user_identifier", message.user_identifier, MAX_IDENTIFIER),
        channel=channel,
        scopes=tuple(message.scopes),
        output_variable=message.output_variable,
        error_output_variable=message.error_output_variable,
        failure_behavior=behavior or FailureBehavior.FAILURE_BRANCH,
        event_data_mode=mode or EventDataMode.NONE,
        custom_payload=payload,
    )


def _depth(payload: struct_pb2.Struct) -> int:
    """How many Struct / list levels `payload` nests (iteratively: a hostile payload cannot exhaust the stack)."""
    deepest = 0
    pending: list[tuple[struct_pb2.Value, int]] = [(value, 1) for value in payload.fields.values()]
    while pending:
        value, level = pending.pop()
        deepest = max(deepest, level)
        kind = value.WhichOneof("kind")
        if kind == "struct_value":
            pending.extend((inner, level + 1) for inner in value.struct_value.fields.values())
        elif kind == "list_value":
            pending.extend((inner, level + 1) for inner in value.list_value.values)
    return deepest


_CONNECTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # as connection names are configured


def connection_name_problem(name: str) -> str:
    """What is wrong with a connection name a caller sent, or "" (never echoing the name)."""
    if not name:
        return "required"
    if not _CONNECTION.match(name):
        return "not a connection name (letters, digits, '_', '.', '-'; max 64)"
    return ""


def generate_request(message: pb.GenerateOtpRequest) -> GenerateRequest:
    """The domain request, or InvalidRequestError listing every bad field."""
    check = _Checker()
    journey = _journey(message.journey, message.HasField("journey"), check)
    step = _step(message.step, message.HasField("step"), check, channel_required=True)
    check.raise_if_any()
    return GenerateRequest(journey, step)


def validate_request(message: pb.ValidateOtpRequest) -> ValidateRequest:
    """The domain request, or InvalidRequestError listing every bad field (never echoing the code)."""
    check = _Checker()
    journey = _journey(message.journey, message.HasField("journey"), check)
    step = _step(message.step, message.HasField("step"), check, channel_required=False)
    if not message.otp_code.strip():
        check.violations.append(("otp_code", "required"))
    elif len(message.otp_code) > MAX_CODE:
        check.violations.append(("otp_code", f"longer than {MAX_CODE} characters"))
    check.raise_if_any()
    return ValidateRequest(journey, step, message.otp_code)


# -- outcomes -------------------------------------------------------------------------------------------


def _struct(data: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(dict(data))
    return struct


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    # From epoch seconds: Timestamp.FromDatetime goes through calendar.timegm, a measurable share of a step.
    seconds = moment.timestamp()
    whole = int(seconds // 1)
    return timestamp_pb2.Timestamp(seconds=whole, nanos=round((seconds - whole) * 1e9) // 1000 * 1000)


def failure_message(failure: StepFailure) -> pb.StepFailure:
    """The proto StepFailure."""
    message = pb.StepFailure(
        code=_FAILURE_CODES[failure.code],
        category=_CATEGORIES[failure.category],
        retryable=failure.retryable,
        message=failure.message,
        cognito_error=failure.cognito_error,
    )
    if failure.attempts_remaining is not None:
        message.attempts_remaining = failure.attempts_remaining
    if failure.retry_after_seconds is not None:
        message.retry_after_seconds = failure.retry_after_seconds
    return message


def _abort(abort: Abort) -> pb.StepAbort:
    return pb.StepAbort(
        client_error=pb.ClientError(code=abort.end_user_error.code, message=abort.end_user_error.message),
        failure=failure_message(abort.failure),
    )


def _event_data(event_data: EventData | None) -> pb.StepEventData | None:
    if event_data is None:
        return None
    return pb.StepEventData(
        mode=_EVENT_DATA_MODES[event_data.mode],
        data=_struct(event_data.data),
        truncated=event_data.truncated,
    )


def _common(executed: Executed[Any]) -> dict[str, Any]:
    outcome = executed.outcome
    fields: dict[str, Any] = {
        "variables": {name: _struct(value) for name, value in outcome.variables.items()},
    }
    event_data = _event_data(executed.event_data)
    if event_data is not None:
        fields["event_data"] = event_data
    match outcome:
        case FailureBranch(failure=failure):
            fields["failure"] = failure_message(failure)
        case Abort():
            fields["abort"] = _abort(outcome)
    return fields


def generate_response(executed: Executed[CodeSent]) -> pb.GenerateOtpResponse:
    """The proto response for a finished Generate."""
    fields = _common(executed)
    match executed.outcome:
        case Success(result=sent):
            fields["success"] = pb.GenerateOtpSuccess(
                delivery_medium=_MEDIUMS[sent.channel],
                masked_destination=sent.masked_destination,
                expires_at=_timestamp(sent.expires_at),
                max_attempts=sent.max_attempts,
            )
    return pb.GenerateOtpResponse(**fields)


def validate_response(executed: Executed[CodeVerified]) -> pb.ValidateOtpResponse:
    """The proto response for a finished Validate."""
    fields = _common(executed)
    match executed.outcome:
        case Success(result=verified):
            success = pb.ValidateOtpSuccess(
                sub=verified.sub,
                username=verified.username,
                claims=_struct(verified.claims),
                attributes=dict(verified.attributes),
                verified_medium=_MEDIUMS[verified.channel],
                authenticated_at=_timestamp(verified.authenticated_at),
            )
            if verified.tokens is not None:
                t = verified.tokens
                success.tokens.CopyFrom(
                    pb.CognitoTokens(
                        id_token=t.id_token,
                        access_token=t.access_token,
                        refresh_token=t.refresh_token,
                        expires_in=t.expires_in,
                        token_type=t.token_type,
                    )
                )
            fields["success"] = success
    return pb.ValidateOtpResponse(**fields)


def check_response(checks: Sequence[ConnectionCheck]) -> pb.CheckConnectionResponse:
    """The proto self-test result."""
    return pb.CheckConnectionResponse(
        ok=all(c.status is not CheckStatus.FAILED for c in checks),
        checks=[pb.ConnectionCheck(name=c.name, status=_CHECKS[c.status], detail=c.detail) for c in checks],
    )
