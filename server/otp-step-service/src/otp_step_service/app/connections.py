"""Each connection's adapters, built from its validated table: the Cognito gateway and the ID-token verifier.

The connections file is read and validated in config/; what it names becomes real objects here, in the
composition root, so configuration knows no adapter.
"""

from __future__ import annotations

from pathlib import Path

from otp_step_service.adapters.cognito import AioCognitoGateway, CognitoTarget
from otp_step_service.adapters.id_tokens import JwksIdTokenVerifier, issuer_for, jwks_url_for
from otp_step_service.config.connections import (
    Configuration,
    ConnectionConfig,
    load_configuration,
    policy_from_config,
)
from otp_step_service.observability.metrics import Metrics
from otp_step_service.steps.ports import Connection


def build_connections(
    path: Path | Configuration, http_pool_size: int, metrics: Metrics | None = None
) -> dict[str, Connection]:
    """Build each connection's adapters (no network yet) from the file (or what was read of it).
    `http_pool_size` sizes each connection's HTTP pool to Cognito: one pooled HTTP connection per step that
    may be waiting on it."""
    configuration = path if isinstance(path, Configuration) else load_configuration(path)
    return {
        name: connection_from_config(name, config, secret, http_pool_size, metrics)
        for name, (config, secret) in configuration.sources.items()
    }


def connection_from_config(
    name: str,
    config: ConnectionConfig,
    secret: str | None,
    http_pool_size: int,
    metrics: Metrics | None = None,
) -> Connection:
    """The Connection (policy + adapters) for one validated table."""
    target = CognitoTarget(
        region=config.region,
        user_pool_id=config.user_pool_id,
        client_id=config.client_id,
        client_secret=secret,
        endpoint_url=config.endpoint_url,
        admin_api=config.api == "admin",
        http_pool_size=http_pool_size,
        connect_timeout=config.connect_timeout_seconds,
        call_timeout=config.call_timeout_seconds,
        throttle_retries=config.throttle_retries,
        channels=config.channels,
        circuit_failure_threshold=config.circuit_failure_threshold,
        circuit_open_seconds=config.circuit_open_seconds,
    )
    policy = policy_from_config(name, config)
    verifier = JwksIdTokenVerifier(
        issuer=issuer_for(config.region, config.user_pool_id),
        audience=config.client_id,
        jwks_url=jwks_url_for(config.region, config.user_pool_id, config.endpoint_url),
        fetch_timeout=config.call_timeout_seconds,
    )
    gateway = AioCognitoGateway(target, metrics=metrics.cognito(name) if metrics is not None else None)
    return Connection(policy=policy, gateway=gateway, verifier=verifier)
