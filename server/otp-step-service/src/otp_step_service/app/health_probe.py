"""`otp-step-service health`: ask a running service's gRPC health service whether it is SERVING.

The image's HEALTHCHECK runs it, and so can an exec probe: no shell and no grpcurl in the image, only the
service's own entry point. By default it asks the plaintext health-only port (OTP_STEP_HEALTH_LISTEN) when
one is set, else the gRPC port (OTP_STEP_LISTEN), on loopback when the service binds every address. TLS is
used when a CA is given, with a client certificate for an mTLS port.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# The settings' variables and default, named here rather than read from config.settings: importing pydantic
# would double the probe's start-up, and the image's HEALTHCHECK runs it every few seconds. A unit test holds
# these to ServiceSettings.
HEALTH_LISTEN_VARIABLE = "OTP_STEP_HEALTH_LISTEN"
LISTEN_VARIABLE = "OTP_STEP_LISTEN"
DEFAULT_LISTEN = "127.0.0.1:50051"


@dataclass(frozen=True, slots=True)
class ProbeTls:
    """How the probe speaks TLS: the CA that signed the server's certificate, and for mTLS a client pair."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None  # the name the server's certificate carries, when the target is an address


def default_target(environ: Mapping[str, str] = os.environ) -> str:
    """Where the service serves health, from its own settings' variables: the health-only port, else the
    gRPC port; a wildcard bind address becomes loopback, the address a probe inside the container reaches."""
    listen = environ.get(HEALTH_LISTEN_VARIABLE) or environ.get(LISTEN_VARIABLE) or DEFAULT_LISTEN
    host, _, port = listen.rpartition(":")
    if host in {"", "0.0.0.0"}:
        host = "127.0.0.1"
    elif host in {"[::]", "::"}:
        host = "[::1]"
    return f"{host}:{port}"


def check(target: str, service: str = "", tls: ProbeTls | None = None, timeout: float = 3.0) -> str:
    """The status name the service reports for `service` ('' is the server as a whole): 'SERVING',
    'NOT_SERVING', 'SERVICE_UNKNOWN', or the gRPC status code of a failed call ('UNAVAILABLE', ...)."""
    with _channel(target, tls) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            code = exc.code()
            return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def _channel(target: str, tls: ProbeTls | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca.read_bytes(),
        private_key=tls.key.read_bytes() if tls.key else None,
        certificate_chain=tls.cert.read_bytes() if tls.cert else None,
    )
    options = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
    return grpc.secure_channel(target, credentials, options=options)
