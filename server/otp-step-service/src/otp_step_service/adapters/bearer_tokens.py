"""Bearer tokens verified against one issuer's JWKS: the `BearerTokenVerifier` authentication asks.

PyJWT does the cryptography (adapters/jwks.py pins each key's algorithm); what is checked, and which
Cognito tokens count, is decided here.
"""

from __future__ import annotations

import jwt

from otp_step_service.adapters.jwks import JwksCache, decode_signed
from otp_step_service.adapters.token_cache import MAX_AGE_SECONDS, VerifiedTokens
from otp_step_service.steps.clock import SYSTEM_CLOCK, Clock
from otp_step_service.steps.errors import TokenVerificationError

# Clock skew allowed on exp and nbf (the verified-token cache keeps entries no longer than this past exp).
TOKEN_LEEWAY_SECONDS = 30


class BearerTokens:
    """Verifies bearer tokens from one issuer; keys from its JWKS (cached, refetch on unknown kid bounded).
    Verified tokens are remembered (`VerifiedTokens`: until exp, at most `cache_seconds`, while their key is
    still published), so a worker's token costs one RS256 verification, not one per call. `keys` replaces
    the key fetcher (tests).

    Tokens carry `aud` = `audience`, or, opted in with `access_client_ids`, are Cognito access tokens: no
    `aud`, but `token_use: access` and a `client_id` from that set (Cognito puts the app client there, not
    in `aud`; aws-jwt-verify checks access tokens the same way)."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str | None,
        jwks_url: str,
        algorithms: list[str],
        access_client_ids: frozenset[str] = frozenset(),
        cache_seconds: float = MAX_AGE_SECONDS,
        clock: Clock = SYSTEM_CLOCK,
        keys: JwksCache | None = None,
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._access_clients = access_client_ids
        self._algorithms = algorithms
        self._keys = keys or JwksCache(jwks_url)
        self._verified = VerifiedTokens(max_age_seconds=cache_seconds, clock=clock)

    async def subject(self, token: str) -> str:
        """The verified token's `sub`, or TokenVerificationError saying which check failed (not the token)."""
        cached = self._verified.subject(token, self._keys.known)
        if cached is not None:
            return cached
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise TokenVerificationError(type(exc).__name__) from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in self._algorithms:
            raise TokenVerificationError("algorithm not allowed")
        if not isinstance(kid, str) or not kid:
            raise TokenVerificationError("the token names no signing key (kid)")
        key = await self._keys.key(kid)
        try:
            # Which rules apply is read from the unverified payload; the rules themselves are then checked
            # on the verified one (a forged `token_use` fails the signature like any other claim).
            access = bool(self._access_clients) and "aud" not in jwt.decode(
                token, options={"verify_signature": False}
            )
        except (jwt.InvalidTokenError, TypeError, ValueError) as exc:
            raise TokenVerificationError(type(exc).__name__) from None
        claims = decode_signed(
            token,
            key,
            algorithm,
            self._algorithms,
            audience=None if access else self._audience,
            issuer=self._issuer,
            options={
                "require": ["exp", "iss", "sub", *(["client_id", "token_use"] if access else ["aud"])],
                "verify_aud": not access,
            },
            leeway=TOKEN_LEEWAY_SECONDS,
        )
        if access and claims["token_use"] != "access":
            raise TokenVerificationError("a token without aud that is no access token (token_use)")
        if access and claims["client_id"] not in self._access_clients:
            raise TokenVerificationError("an access token of an app client not accepted (client_id)")
        subject = str(claims["sub"])
        # decode() checked that exp is a number; past exp + leeway a fresh verification refuses the token.
        self._verified.remember(token, subject, kid, key, float(claims["exp"]) + TOKEN_LEEWAY_SECONDS)
        return subject

    async def aclose(self) -> None:
        """Close the key fetcher."""
        await self._keys.aclose()
