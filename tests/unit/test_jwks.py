"""The JWKS cache: keys served stale when the endpoint fails, refreshes rate-limited whatever happens."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from otp_step_service.adapters.jwks import JwksCache
from otp_step_service.steps.errors import TokenVerificationError


def _key_set(kid: str) -> dict[str, Any]:
    public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    jwk: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    return {"keys": [{**jwk, "kid": kid, "use": "sig", "alg": "RS256"}]}


class ScriptedCache(JwksCache):
    """A cache whose fetches answer from a script (a key set, or an error) and are counted."""

    def __init__(self, answers: list[dict[str, Any] | Exception], **options: Any) -> None:
        super().__init__("http://127.0.0.1:9/jwks.json", **options)
        self.answers = answers
        self.fetches = 0

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        self.fetches += 1
        answer = self.answers.pop(0) if self.answers else TokenVerificationError("down")
        if isinstance(answer, Exception):
            raise answer
        return {k.key_id: k for k in jwt.PyJWKSet.from_dict(answer).keys if k.key_id}


def test_known_keys_are_served_when_the_refresh_fails() -> None:
    async def scenario() -> None:
        cache = ScriptedCache([_key_set("k1")], lifespan_seconds=0.0, min_refresh_interval_seconds=0.0)
        assert (await cache.key("k1")).key_id == "k1"
        # Past its lifespan, the refresh fails: the known key still verifies sign-ins.
        assert (await cache.key("k1")).key_id == "k1"
        assert cache.fetches == 2

    asyncio.run(scenario())


def test_unknown_kids_cannot_flood_the_key_endpoint() -> None:
    async def scenario() -> None:
        cache = ScriptedCache([_key_set("k1"), _key_set("k1")], min_refresh_interval_seconds=60.0)
        await cache.key("k1")
        for kid in ("made-up-1", "made-up-2", "made-up-3"):
            with pytest.raises(TokenVerificationError):
                await asyncio.gather(*(cache.key(kid) for _ in range(20)))
        assert cache.fetches == 1  # one fetch at start; made-up kids within the interval fetch nothing

    asyncio.run(scenario())


def test_a_cached_token_dies_with_its_key_when_the_key_set_rotates_or_drops_it() -> None:
    from otp_step_service.adapters.bearer_tokens import BearerTokens

    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(signing.public_key(), as_dict=True)
    published = {"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}
    now = int(time.time())
    claims = {"iss": "https://issuer.test", "aud": "svc", "sub": "worker", "exp": now + 300}
    token = jwt.encode(claims, signing, algorithm="RS256", headers={"kid": "k1"})

    async def scenario(next_set: dict[str, Any]) -> None:
        keys = ScriptedCache([published, next_set], min_refresh_interval_seconds=0.0)
        tokens = BearerTokens(
            issuer="https://issuer.test", audience="svc", jwks_url="", algorithms=["RS256"], keys=keys
        )
        assert await tokens.subject(token) == "worker"
        assert await tokens.subject(token) == "worker"  # from the cache: no fetch
        assert keys.fetches == 1
        await keys.refresh(force=True)  # the issuer's key set, as fetched next
        with pytest.raises(TokenVerificationError):
            await tokens.subject(token)

    asyncio.run(scenario(_key_set("k1")))  # rotated: another key under the same kid
    asyncio.run(scenario(_key_set("k2")))  # removed
