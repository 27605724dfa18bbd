"""A small typed client for the StepExecutor service (Cognito OTP Generate / Validate).

    from otp_step_client import StepExecutorClient, Journey, Step

    with StepExecutorClient("127.0.0.1:50051") as client:
        journey = Journey("jit-migration", run_id="run-42", step_id="send-code")
        sent = client.generate_otp(journey, Step("demo", "ada@example.com", channel="EMAIL"))
        result = client.validate_otp(journey.at_step("check-code"), Step("demo", "ada@example.com"), "12345678")

Responses are the generated protobuf messages (`stepexecutor.v1`): branch on `response.WhichOneof("outcome")`.
"""

from otp_step_client._client import (
    Credentials,
    DeadlineExceededError,
    InvalidArgumentError,
    Journey,
    NotFoundError,
    OtpChannel,
    PermissionDeniedError,
    ResourceExhaustedError,
    Step,
    StepExecutorClient,
    StepExecutorError,
    UnauthenticatedError,
    UnavailableError,
)
from otp_step_client._service_config import CHANNEL_OPTIONS, SERVICE_CONFIG

__all__ = [
    "CHANNEL_OPTIONS",
    "SERVICE_CONFIG",
    "Credentials",
    "DeadlineExceededError",
    "InvalidArgumentError",
    "Journey",
    "NotFoundError",
    "OtpChannel",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "Step",
    "StepExecutorClient",
    "StepExecutorError",
    "UnauthenticatedError",
    "UnavailableError",
]
