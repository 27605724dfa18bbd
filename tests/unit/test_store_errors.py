"""Store failures of every kind leave as ChallengeStoreError (a retryable step failure), never as a crash."""

from __future__ import annotations

import asyncio

import pytest
from otp_step_service.adapters.redis_rate import RedisStepRate
from otp_step_service.steps.errors import ChallengeStoreError
from redis.asyncio.cluster import ClusterNode, RedisCluster


async def _take_from_an_unreachable_cluster() -> None:
    # Port 1 on loopback refuses at once: no node answers, so the cluster client cannot even learn its slots.
    cluster = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", 1)])
    try:
        await RedisStepRate(cluster).take("caller", 5.0)
    finally:
        await cluster.aclose()


def test_a_cluster_with_no_reachable_node_is_a_store_failure_not_a_crash() -> None:
    with pytest.raises(ChallengeStoreError, match="RedisClusterException"):
        asyncio.run(_take_from_an_unreachable_cluster())
