"""The client implementation: request building, deadlines, and gRPC errors turned into one exception type."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Literal

import grpc
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from stepexecutor.v1 import step_executor_pb2 as pb
from stepexecutor.v1 import step_executor_pb2_grpc as pb_grpc

from otp_step_client._service_config import CHANNEL_OPTIONS

OtpChannel = Literal["EMAIL", "SMS"]
EventData = Literal["NONE", "STEP_INPUT_OUTPUT", "CUSTOM_PAYLOAD"]


class StepExecutorError(Exception):
    """The call could not run (a non-OK gRPC status). The root of every error this client raises; the
    subclass says which status, and every rich-error detail the service sent is unpacked:

    - `field_violations`: (field, why) per bad field (google.rpc.BadRequest, with INVALID_ARGUMENT);
    - `reason`, `domain`, `metadata`: google.rpc.ErrorInfo (e.g. CONNECTION_NOT_FOUND, OVERLOADED);
    - `retry_after`: seconds to wait before retrying (google.rpc.RetryInfo), when the service said so.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        field_violations: Sequence[tuple[str, str]] = (),
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.field_violations = list(field_violations)
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed later (backpressure, shutdown, a deadline)."""
        return self.code in _RETRYABLE


class InvalidArgumentError(StepExecutorError):
    """INVALID_ARGUMENT: fix the request (see `field_violations`)."""


class NotFoundError(StepExecutorError):
    """NOT_FOUND: the step names a connection the service does not have (a journey configuration error)."""


class ResourceExhaustedError(StepExecutorError):
    """RESOURCE_EXHAUSTED: the service (or this caller) is at its concurrency bound; back off `retry_after`."""


class DeadlineExceededError(StepExecutorError):
    """DEADLINE_EXCEEDED: the deadline ran out before the step could answer."""


class UnauthenticatedError(StepExecutorError):
    """UNAUTHENTICATED: no credential, or one the service did not accept (deliberately not saying why)."""


class PermissionDeniedError(StepExecutorError):
    """PERMISSION_DENIED: this caller may not use that connection or tenant (`reason` says which)."""


class UnavailableError(StepExecutorError):
    """UNAVAILABLE: the service is draining or unreachable, or the step could not run and may be made again as
    it is (`reason` CHALLENGE_STORE_UNAVAILABLE: its store failed before Cognito was asked; EXECUTION_IN_FLIGHT:
    an earlier attempt of this Generate's step execution is still sending); retry after `retry_after`, elsewhere
    if possible. A GenerateOtp has already been retried by the service config when this is raised."""


_RETRYABLE = frozenset(
    {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
)
_BY_CODE: dict[grpc.StatusCode, type[StepExecutorError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
}


@dataclass(frozen=True, slots=True)
class Journey:
    """Where the step runs."""

    journey_id: str
    run_id: str
    step_id: str
    tenant_id: str = ""
    step_execution_id: str = ""
    ip_address: str = ""
    user_agent: str = ""

    def at_step(self, step_id: str, step_execution_id: str = "") -> Journey:
        """The same run, at another step."""
        return replace(self, step_id=step_id, step_execution_id=step_execution_id)

    def message(self) -> pb.JourneyContext:
        """As protobuf."""
        return pb.JourneyContext(
            journey_id=self.journey_id,
            journey_run_id=self.run_id,
            step_id=self.step_id,
            tenant_id=self.tenant_id,
            step_execution_id=self.step_execution_id,
            end_user=pb.EndUserContext(ip_address=self.ip_address, user_agent=self.user_agent),
        )


@dataclass(frozen=True, slots=True)
class Step:
    """The step's configuration."""

    connection: str
    user_identifier: str
    channel: OtpChannel | None = None
    scopes: Sequence[str] = ()
    output_variable: str = "otp_result"
    error_output_variable: str = "otp_error"
    abort_on_failure: bool = False
    event_data: EventData = "NONE"
    custom_payload: Mapping[str, Any] = field(default_factory=dict)

    def message(self) -> pb.StepConfiguration:
        """As protobuf."""
        payload = struct_pb2.Struct()
        payload.update(dict(self.custom_payload))
        return pb.StepConfiguration(
            connection=self.connection,
            user_identifier=self.user_identifier,
            otp_channel=getattr(pb, f"OTP_CHANNEL_{self.channel}")
            if self.channel
            else pb.OTP_CHANNEL_UNSPECIFIED,
            scopes=list(self.scopes),
            output_variable=self.output_variable,
            error_output_variable=self.error_output_variable,
            failure_behavior=pb.FAILURE_BEHAVIOR_ABORT
            if self.abort_on_failure
            else pb.FAILURE_BEHAVIOR_FAILURE_BRANCH,
            event_data=pb.EventDataReporting(
                mode=getattr(pb, f"EVENT_DATA_MODE_{self.event_data}"), custom_payload=payload
            ),
        )


@dataclass(frozen=True, slots=True)
class Credentials:
    """How the client proves who it is, and whom it trusts (all PEM bytes; see the docs, "TLS and authentication").

    `root_certificates` set: TLS, verifying the service against that CA bundle; with `certificate_chain` and
    `private_key`, mTLS. `token`: a bearer token sent as `authorization: Bearer ...` on every call.
    """

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    server_name: str | None = None  # the name to expect in the service's certificate, when not the target's

    @property
    def tls(self) -> bool:
        """Whether the channel uses TLS."""
        return self.root_certificates is not None or self.certificate_chain is not None

    def channel(self, target: str) -> grpc.Channel:
        """A channel to `target` with these credentials and the shipped service config (`SERVICE_CONFIG`)."""
        options: list[tuple[str, object]] = list(CHANNEL_OPTIONS)
        if not self.tls:
            return grpc.insecure_channel(target, options=options)
        ssl = grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return grpc.secure_channel(target, ssl, options=options)


class StepExecutorClient:
    """A connection to the service. Thread-safe; close it (or use `with`) when done."""

    def __init__(
        self,
        target: str,
        timeout: float = 10.0,
        channel: grpc.Channel | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        credentials = credentials or Credentials()
        self._channel = channel or credentials.channel(target)
        # Sent as metadata rather than call credentials: those refuse plaintext, and loopback may be plaintext.
        self._auth: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {credentials.token}"),) if credentials.token else ()
        )
        self._stub = pb_grpc.StepExecutorStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self.timeout = timeout

    def generate_otp(
        self,
        journey: Journey,
        step: Step,
        *,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> pb.GenerateOtpResponse:
        """Run Cognito OTP Generate.

        A journey without a `step_execution_id` gets a fresh one for this call: the service config retries a
        Generate refused with UNAVAILABLE by sending the same request again, and only an execution id lets the
        service tell that repeat (answered with the code already sent, or waited for while it is being sent)
        from a second Generate of the run (held to the resend cooldown). Set it yourself to make your own
        retries of one execution idempotent too."""
        if not journey.step_execution_id:
            journey = replace(journey, step_execution_id=uuid.uuid4().hex)
        request = pb.GenerateOtpRequest(journey=journey.message(), step=step.message())
        return self._call(self._stub.GenerateOtp, request, timeout, metadata)  # type: ignore[no-any-return]

    def validate_otp(
        self,
        journey: Journey,
        step: Step,
        otp_code: str,
        *,
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> pb.ValidateOtpResponse:
        """Run Cognito OTP Validate."""
        request = pb.ValidateOtpRequest(journey=journey.message(), step=step.message(), otp_code=otp_code)
        return self._call(self._stub.ValidateOtp, request, timeout, metadata)  # type: ignore[no-any-return]

    def check_connection(
        self, connection: str, *, timeout: float | None = None
    ) -> pb.CheckConnectionResponse:
        """Run the connection self-test."""
        request = pb.CheckConnectionRequest(connection=connection)
        return self._call(self._stub.CheckConnection, request, timeout, ())  # type: ignore[no-any-return]

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The health status name: SERVING, NOT_SERVING, ..."""
        response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout, ())
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> StepExecutorClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(
        self, method: Any, request: Any, timeout: float | None, metadata: Sequence[tuple[str, str]]
    ) -> Any:
        try:
            metadata = [*self._auth, *metadata]
            return method(request, timeout=timeout or self.timeout, metadata=metadata or None)
        except grpc.RpcError as exc:
            raise _error(exc) from None


def _error(exc: grpc.RpcError) -> StepExecutorError:
    call: Any = exc
    violations: list[tuple[str, str]] = []
    info = error_details_pb2.ErrorInfo()
    retry_after: float | None = None
    status = rpc_status.from_call(call)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend((v.field, v.description) for v in bad.field_violations)
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToTimedelta().total_seconds()
    code = call.code()
    kind = _BY_CODE.get(code, StepExecutorError)
    return kind(
        code,
        call.details() or "",
        violations,
        reason=info.reason,
        domain=info.domain,
        metadata=dict(info.metadata),
        retry_after=retry_after,
    )
