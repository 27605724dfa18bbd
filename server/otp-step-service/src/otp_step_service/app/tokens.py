"""The caller's bearer tokens, verified when the settings name an issuer, its JWKS and an audience (or
opted-in Cognito access tokens): the verifier the port's authentication is given."""

from __future__ import annotations

from otp_step_service.adapters.bearer_tokens import BearerTokens
from otp_step_service.config.exposure import comma_list, token_algorithms
from otp_step_service.config.settings import ServiceSettings
from otp_step_service.steps.clock import SYSTEM_CLOCK, Clock


def bearer_tokens(settings: ServiceSettings, clock: Clock = SYSTEM_CLOCK) -> BearerTokens | None:
    """The verifier OTP_STEP_TOKEN_* configure, or None when bearer tokens are not accepted."""
    access_clients = frozenset(comma_list(settings.token_access_client_ids))
    if not (
        settings.token_issuer and settings.token_jwks_url and (settings.token_audience or access_clients)
    ):
        return None
    return BearerTokens(
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        jwks_url=settings.token_jwks_url,
        algorithms=token_algorithms(settings.token_algorithms),
        access_client_ids=access_clients,
        cache_seconds=settings.token_cache_seconds,
        clock=clock,
    )
