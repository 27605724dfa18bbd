"""What listening beyond loopback demands: TLS (or an explicit opt-out) and authenticated callers.

Checked once with the other settings, before anything listens: a service that sends one-time passcodes must
not be reachable by any process on the network that does not say who it is.
"""

from __future__ import annotations

from typing import Protocol

# Asymmetric algorithms only: a JWKS publishes public keys, and accepting HS* with one would let anyone who
# has the public key sign tokens (algorithm confusion); `none` is never accepted.
TOKEN_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class SecuritySettings(Protocol):
    """The fields of ServiceSettings this check reads."""

    @property
    def tls_cert(self) -> object: ...
    @property
    def tls_key(self) -> object: ...
    @property
    def tls_client_ca(self) -> object: ...
    @property
    def allow_insecure(self) -> bool: ...
    @property
    def token_issuer(self) -> str | None: ...
    @property
    def token_audience(self) -> str | None: ...
    @property
    def token_jwks_url(self) -> str | None: ...
    @property
    def token_access_client_ids(self) -> str: ...
    @property
    def token_algorithms(self) -> str: ...
    @property
    def listens_on_loopback(self) -> bool: ...
    @property
    def metrics_on_loopback(self) -> bool: ...
    @property
    def metrics_allow_remote(self) -> bool: ...


def comma_list(value: str) -> list[str]:
    """A comma-separated setting as its non-empty items."""
    return [name.strip() for name in value.split(",") if name.strip()]


def token_algorithms(value: str) -> list[str]:
    """The comma-separated algorithm list as names."""
    return comma_list(value)


def check_exposure(settings: SecuritySettings) -> None:
    """Raise ValueError naming the variable and the fix when the settings leave the port open."""
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ValueError("OTP_STEP_TLS_CERT and OTP_STEP_TLS_KEY go together: set both, or neither")
    if settings.tls_client_ca is not None and settings.tls_cert is None:
        raise ValueError("OTP_STEP_TLS_CLIENT_CA (mTLS) needs OTP_STEP_TLS_CERT and OTP_STEP_TLS_KEY")
    # An audience, or Cognito access tokens' client ids, or both: access tokens carry no aud.
    accepted = settings.token_audience or comma_list(settings.token_access_client_ids)
    token = (settings.token_issuer, accepted, settings.token_jwks_url)
    if any(token) and not all(token):
        raise ValueError(
            "bearer tokens need OTP_STEP_TOKEN_ISSUER, OTP_STEP_TOKEN_JWKS_URL and OTP_STEP_TOKEN_AUDIENCE "
            "(and/or OTP_STEP_TOKEN_ACCESS_CLIENT_IDS for Cognito access tokens) together"
        )
    algorithms = token_algorithms(settings.token_algorithms)
    unknown = sorted(set(algorithms) - TOKEN_ALGORITHMS)
    if unknown or not algorithms:
        raise ValueError(
            f"OTP_STEP_TOKEN_ALGORITHMS: {', '.join(unknown) or 'empty'} not accepted; "
            f"use some of {', '.join(sorted(TOKEN_ALGORITHMS))}"
        )
    if not settings.metrics_on_loopback and not (settings.metrics_allow_remote or settings.allow_insecure):
        # The scrape endpoint is plaintext HTTP without authentication: beyond loopback only on purpose, as
        # for the step port.
        raise ValueError(
            "OTP_STEP_METRICS_LISTEN is beyond loopback (plaintext, unauthenticated): set "
            "OTP_STEP_METRICS_ALLOW_REMOTE=true to serve it there on purpose (or scrape through a local proxy)"
        )
    if settings.listens_on_loopback:
        return
    if settings.tls_cert is None and not settings.allow_insecure:
        raise ValueError(
            "OTP_STEP_LISTEN is beyond loopback: set OTP_STEP_TLS_CERT and OTP_STEP_TLS_KEY, "
            "or OTP_STEP_ALLOW_INSECURE=true (--allow-insecure) to serve plaintext on purpose"
        )
    if settings.tls_client_ca is None and settings.token_issuer is None:
        raise ValueError(
            "OTP_STEP_LISTEN is beyond loopback: callers must authenticate; set OTP_STEP_TLS_CLIENT_CA (mTLS) "
            "and/or OTP_STEP_TOKEN_ISSUER, OTP_STEP_TOKEN_AUDIENCE, OTP_STEP_TOKEN_JWKS_URL (bearer tokens)"
        )
