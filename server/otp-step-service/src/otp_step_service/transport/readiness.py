"""Readiness that means something: a `grpc.health.v1` service per connection, following its circuit breaker.

`otp.connection/<name>` is SERVING while the connection's circuit is closed or half-open (a probe may get
through) and NOT_SERVING while it is open, until its open time is over. The overall status ("" and the StepExecutor service) stays SERVING
while any connection works: one failing pool must not take the whole service out of a load balancer; it
turns NOT_SERVING only when every connection's circuit is open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from grpc_health.v1 import health, health_pb2

from otp_step_service.steps.circuit_breaker import CircuitBreaker, CircuitState
from otp_step_service.steps.ports import Connection

PREFIX = "otp.connection/"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_name(connection: str) -> str:
    """The health-checking service name of a connection."""
    return PREFIX + connection


class ConnectionReadiness:
    """Publishes each connection's circuit state, and the overall status, to the health servicer."""

    def __init__(self, servicer: health.aio.HealthServicer, overall: tuple[str, ...]) -> None:
        self._health = servicer
        self._overall = overall
        self._breakers: dict[str, CircuitBreaker] = {}
        self._publishing: set[asyncio.Task[None]] = set()

    def watch(self, connections: Mapping[str, Connection]) -> list[str]:
        """Follow these connections' breakers (again after a reload); returns the names no longer configured."""
        gone = [name for name in self._breakers if name not in connections]
        self._breakers = {}
        for name, connection in connections.items():
            breaker = getattr(connection.gateway, "breaker", None)
            if isinstance(breaker, CircuitBreaker):
                breaker.on_change = lambda _state, name=name: self._schedule(name)
                self._breakers[name] = breaker
        return gone

    async def publish(self, gone: tuple[str, ...] | list[str] = ()) -> None:
        """Set every watched connection's status and the overall one (and SERVICE_UNKNOWN for `gone`)."""
        for name in gone:
            await self._health.set(health_name(name), health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
        for name in self._breakers:
            await self._publish_one(name)
        await self._publish_overall()

    def _schedule(self, name: str) -> None:
        # Breakers change state inside a Cognito call; the health servicer's setter is a coroutine.
        async def publish() -> None:
            await self._publish_one(name)
            await self._publish_overall()
            breaker = self._breakers.get(name)
            if breaker is not None and breaker.state is CircuitState.OPEN:
                # Open, it is NOT_SERVING; once a probe would be let through it is SERVING again, even if no
                # step comes to probe it (a balancer that stopped sending would otherwise never send again).
                await asyncio.sleep(breaker.open_seconds)
                await self._publish_one(name)
                await self._publish_overall()

        task = asyncio.get_running_loop().create_task(publish())
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish_one(self, name: str) -> None:
        breaker = self._breakers.get(name)
        if breaker is not None:
            await self._health.set(health_name(name), _SERVING if breaker.available else _NOT_SERVING)

    async def _publish_overall(self) -> None:
        if not self._breakers:
            return
        working = any(b.available for b in self._breakers.values())
        for name in self._overall:
            await self._health.set(name, _SERVING if working else _NOT_SERVING)
