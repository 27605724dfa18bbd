"""ID-token verification against the pool's JWKS (PyJWT), with the keys cached.

Validate releases claims only from a token whose signature, expiry, audience, issuer and token_use all check
out: the tokens come back over the network, and a migration must not create users from unverified data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt

from otp_step_service.steps.ports import TokenVerificationError


def issuer_for(region: str, user_pool_id: str) -> str:
    """Cognito's issuer URL for a pool [doc]."""
    return f"https://cognito-idp.{region}.amazonaws.com/{user_pool_id}"


def jwks_url_for(region: str, user_pool_id: str, endpoint_url: str | None) -> str:
    """The JWKS address: the issuer's, or the same path on an endpoint override (the local emulator)."""
    if endpoint_url:
        return f"{endpoint_url.rstrip('/')}/{user_pool_id}/.well-known/jwks.json"
    return f"{issuer_for(region, user_pool_id)}/.well-known/jwks.json"


class JwksIdTokenVerifier:
    """IdTokenVerifier for one pool and app client."""

    def __init__(self, *, issuer: str, audience: str, jwks_url: str, fetch_timeout: float = 3.0) -> None:
        self._issuer = issuer
        self._audience = audience
        # Keys are cached for an hour; an unknown `kid` (key rotation) triggers one refetch.
        self._jwks = jwt.PyJWKClient(
            jwks_url, cache_keys=True, lifespan=3600, timeout=int(max(1, fetch_timeout))
        )

    def verify(self, id_token: str) -> Mapping[str, Any]:
        """Verified claims, or TokenVerificationError naming what failed (never the token itself)."""
        try:
            key = self._jwks.get_signing_key_from_jwt(id_token)
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key.key,
                algorithms=["RS256"],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "token_use"]},
                leeway=30,
            )
        except jwt.PyJWKClientError as exc:
            raise TokenVerificationError(f"signing key unavailable: {type(exc).__name__}") from None
        except jwt.InvalidTokenError as exc:
            raise TokenVerificationError(f"{type(exc).__name__}: {exc}") from None
        if claims.get("token_use") != "id":
            raise TokenVerificationError("token_use is not 'id'")
        return claims

    def warm_up(self) -> None:
        """Fetch the keys now (start-up), so the first Validate does not pay for it."""
        self._jwks.get_signing_keys()
