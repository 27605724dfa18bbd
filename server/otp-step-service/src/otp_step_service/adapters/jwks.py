"""A JSON Web Key Set fetched over HTTP without blocking the event loop, cached, refreshed on an unknown `kid`.

PyJWT's own PyJWKClient fetches with urllib, which would stall every step on the loop while it waits. Here the
fetch is aiohttp, one at a time (concurrent look-ups of a new `kid` share one fetch), and refreshes for unknown
keys are rate-limited, so a flood of tokens with made-up `kid`s cannot turn into a flood of fetches.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import jwt

from otp_step_service.steps.errors import TokenVerificationError


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
        self._fetching = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def key(self, kid: str) -> jwt.PyJWK:
        """The key with id `kid`: from the cache, else after one (rate-limited) refetch."""
        if time.monotonic() - self._fetched_at > self._lifespan:
            await self.refresh(force=True)
        found = self._keys.get(kid)
        if found is None:
            await self.refresh(force=False)
            found = self._keys.get(kid)
        if found is None:
            raise TokenVerificationError("signing key unavailable: no key with this kid")
        return found

    async def refresh(self, *, force: bool) -> None:
        """Fetch the set again, unless another task just did (or, for an unknown kid, did recently)."""
        started = time.monotonic()
        async with self._fetching:
            since = time.monotonic() - self._fetched_at
            if self._fetched_at >= started or (not force and since < self._min_refresh):
                return
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
