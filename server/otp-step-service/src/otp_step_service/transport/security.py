"""The gRPC port's security, assembled from the settings: its credentials and the authentication interceptor."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health

from otp_step_service.config.callers import Callers
from otp_step_service.config.connections import load_configuration
from otp_step_service.config.settings import ServiceSettings
from otp_step_service.steps.clock import SYSTEM_CLOCK, Clock
from otp_step_service.steps.errors import ConfigurationError
from otp_step_service.steps.ports import BearerTokenVerifier
from otp_step_service.steps.step_rate import InProcessStepRate, StepRate
from otp_step_service.transport.auth import Authentication
from otp_step_service.transport.tls import ReloadingCertificates, TlsFiles, server_credentials

log = logging.getLogger(__name__)

# Health checks stay open: load balancers and orchestrators probe them without credentials.
OPEN_METHODS = frozenset({f"/{health.SERVICE_NAME}/Check", f"/{health.SERVICE_NAME}/Watch"})


@dataclass
class PortSecurity:
    """TLS files (None: plaintext) and the authentication interceptor (None: no authentication, no rate)."""

    tls: TlsFiles | None
    authentication: Authentication | None
    certificates: ReloadingCertificates | None = None

    @classmethod
    def from_settings(
        cls,
        settings: ServiceSettings,
        step_methods: frozenset[str],
        *,
        rate: Callable[[], StepRate] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        callers: Callers | None = None,
        tokens: BearerTokenVerifier | None = None,
    ) -> PortSecurity:
        """Read the callers when authentication is on; warn loudly about plaintext beyond loopback. The step
        rate, when one is set, comes from `rate` (the composition root's; else counted in this process)."""
        tls = None
        if settings.tls_cert is not None and settings.tls_key is not None:
            tls = TlsFiles(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
        elif not settings.listens_on_loopback:
            log.warning(
                "SERVING PLAINTEXT BEYOND LOOPBACK on %s (--allow-insecure / OTP_STEP_ALLOW_INSECURE): anyone on "
                "the path can read "
                "codes, claims and credentials; set OTP_STEP_TLS_CERT and OTP_STEP_TLS_KEY",
                settings.listen,
            )
        certificates = settings.tls_client_ca is not None
        if not (tokens or certificates or settings.steps_per_second_per_caller):
            return cls(tls, None)
        known = Callers({}, {})
        if tokens or certificates:
            known = callers if callers is not None else load_configuration(settings.connections_path).callers
            if not len(known):
                raise ConfigurationError(
                    f"callers authenticate, but {settings.connections_path} defines no [callers.<name>] table: "
                    "add one per caller (the docs, 'TLS and authentication')"
                )
        authentication = Authentication(
            known,
            tokens=tokens,
            certificates=certificates,
            open_methods=OPEN_METHODS,
            step_methods=step_methods,
            steps_per_second=settings.steps_per_second_per_caller,
            rate=rate() if rate is not None else InProcessStepRate(clock),
        )
        return cls(tls, authentication)

    def bind(self, server: grpc.aio.Server, listen: str) -> int:
        """Add the port, secure or not; returns the bound port (0: not bound)."""
        if self.tls is None:
            return server.add_insecure_port(listen)
        try:
            credentials, self.certificates = server_credentials(self.tls)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"OTP_STEP_TLS_CERT / OTP_STEP_TLS_KEY / OTP_STEP_TLS_CLIENT_CA: cannot load ({exc})"
            ) from None
        return server.add_secure_port(listen, credentials)
