"""ID-token verification against the pool's JWKS (PyJWT), with the keys cached (`JwksCache`).

Validate releases claims only from a token whose signature, expiry, audience, issuer and token_use all check
out: the tokens come back over the network, and a migration must not create users from unverified data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt

from otp_step_service.adapters.jwks import JwksCache, decode_signed
from otp_step_service.steps.errors import TokenVerificationError


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
        self._keys = JwksCache(jwks_url, fetch_timeout=fetch_timeout)

    async def verify(self, id_token: str) -> Mapping[str, Any]:
        """Verified claims, or TokenVerificationError naming what failed (never the token itself)."""
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.InvalidTokenError as exc:
            raise TokenVerificationError(f"{type(exc).__name__}: {exc}") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenVerificationError("the token names no signing key (kid)")
        key = await self._keys.key(kid)
        claims = decode_signed(
            id_token,
            key,
            header.get("alg"),
            ("RS256",),  # Cognito signs ID tokens with RS256 [doc]
            audience=self._audience,
            issuer=self._issuer,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "token_use"]},
            leeway=30,
        )
        if claims.get("token_use") != "id":
            raise TokenVerificationError("token_use is not 'id'")
        return claims

    async def warm_up(self) -> None:
        """Fetch the keys now (start-up), so the first Validate does not pay for it."""
        await self._keys.refresh(force=True)

    async def aclose(self) -> None:
        """Close the key fetcher."""
        await self._keys.aclose()
