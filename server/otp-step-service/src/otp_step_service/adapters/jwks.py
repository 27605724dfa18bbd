"""A JSON Web Key Set fetched over HTTP without blocking the event loop, cached, refreshed on an unknown `kid`.

PyJWT's own PyJWKClient fetches with urllib, which would stall every step on the loop while it waits. Here the
fetch is aiohttp, one at a time (concurrent look-ups of a new `kid` share one fetch), and every refresh is
rate-limited by the time of the last *attempt*, so neither a flood of tokens with made-up `kid`s nor an
unreachable key endpoint turns into a flood of fetches. Keys past their lifespan are still served when the
refresh fails (stale-if-error): an outage of the key endpoint must not fail sign-ins whose keys are known.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from typing import Any

import aiohttp
import jwt

from otp_step_service.steps.errors import TokenVerificationError

# The algorithms each key type can verify. A JWK that names its `alg` verifies that one only; one that does
# not is pinned to its type (and curve): an ES256 header naming an RSA key must fail as a bad token, never
# reach the library with a key of the wrong type (PyJWT then raises TypeError, not InvalidTokenError).
_RSA = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_OKP_BY_CURVE = {"Ed25519": "EdDSA", "Ed448": "EdDSA"}


def key_algorithms(key: jwt.PyJWK) -> frozenset[str]:
    """The signing algorithms `key` may verify: its JWK's `alg`, else every one of its type and curve."""
    data: dict[str, Any] = getattr(key, "_jwk_data", {})
    named = data.get("alg")
    if isinstance(named, str) and named:
        return frozenset({named})
    curve = data.get("crv")
    match key.key_type:
        case "RSA":
            return _RSA
        case "EC" if isinstance(curve, str) and curve in _EC_BY_CURVE:
            return frozenset({_EC_BY_CURVE[curve]})
        case "OKP" if isinstance(curve, str) and curve in _OKP_BY_CURVE:
            return frozenset({_OKP_BY_CURVE[curve]})
    return frozenset()


def decode_signed(
    token: str, key: jwt.PyJWK, algorithm: object, allowed: Collection[str], **checks: Any
) -> dict[str, Any]:
    """The token's claims once its signature (by `key`, with the header's `algorithm`) and `checks` hold.

    The algorithm must be both allowed and one `key`'s type verifies. Whatever the library raises on a
    hostile token (TypeError and ValueError included, not only InvalidTokenError) becomes a
    TokenVerificationError, so every bad token is refused and counted the same way."""
    if not isinstance(algorithm, str) or algorithm not in allowed:
        raise TokenVerificationError("algorithm not allowed")
    if algorithm not in key_algorithms(key):
        raise TokenVerificationError("the algorithm does not match the signing key's type")
    try:
        claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=[algorithm], **checks)
    except jwt.InvalidTokenError as exc:
        raise TokenVerificationError(type(exc).__name__) from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # a token shaped to confuse the library
        raise TokenVerificationError(f"malformed token ({type(exc).__name__})") from None
    return claims


class JwksCache:
    """The signing keys at `url`, by key id."""

    def __init__(
        self,
        url: str,
        *,
        fetch_timeout: float = 3.0,
        lifespan_seconds: float = 3600.0,
        min_refresh_interval_seconds: float = 30.0,
    ) -> None:
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=fetch_timeout)
        self._lifespan = lifespan_seconds
        self._min_refresh = min_refresh_interval_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._fetching = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def key(self, kid: str) -> jwt.PyJWK:
        """The key with id `kid`: from the cache, else after one (rate-limited) refetch."""
        if time.monotonic() - self._fetched_at > self._lifespan:
            try:
                await self.refresh(force=True)
            except TokenVerificationError:
                if not self._keys:
                    raise  # nothing to fall back on
        found = self._keys.get(kid)
        if found is None:
            await self.refresh(force=False)
            found = self._keys.get(kid)
        if found is None:
            raise TokenVerificationError("signing key unavailable: no key with this kid")
        return found

    def known(self, kid: str) -> jwt.PyJWK | None:
        """The key with id `kid` as last fetched, without fetching (None: not in the current set)."""
        return self._keys.get(kid)

    async def refresh(self, *, force: bool) -> None:
        """Fetch the set again, unless another task just did, or one tried within the refresh interval
        (`force`, at start-up, only skips the interval when nothing was ever fetched)."""
        started = time.monotonic()
        async with self._fetching:
            now = time.monotonic()
            if self._attempted_at >= started:
                return  # a fetch ran while this task waited for the lock: its result stands
            if now - self._attempted_at < self._min_refresh and (self._keys or not force):
                return
            self._attempted_at = now
            self._keys = await self._fetch()
            self._fetched_at = time.monotonic()

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(self._url) as response:
                response.raise_for_status()
                document: Any = await response.json(content_type=None)
            keys = jwt.PyJWKSet.from_dict(document).keys
        except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWKSetError) as exc:
            raise TokenVerificationError(f"signing keys unavailable: {type(exc).__name__}") from None
        return {key.key_id: key for key in keys if key.key_id}

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
