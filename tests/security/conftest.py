"""What the security tests share: the challenge store each attack runs against."""

from __future__ import annotations

import pytest
import redis


@pytest.fixture(params=["memory", "redis"])
def store_settings(request: pytest.FixtureRequest) -> dict[str, str]:
    """The service's challenge store: in memory, or a real Redis (the Lua scripts)."""
    if request.param == "memory":
        return {}
    url = request.getfixturevalue("redis_url")
    redis.Redis.from_url(url).flushdb()
    return {"challenge_store": url, "challenge_keys_file": str(request.getfixturevalue("keys_file"))}
