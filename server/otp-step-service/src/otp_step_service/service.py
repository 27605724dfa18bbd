"""Assembling the service from its settings: connections, challenge store, runner, server, self-test."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from otp_step_service.adapters.memory_store import InMemoryChallengeStore
from otp_step_service.connections import build_connections
from otp_step_service.execution import StepRunner
from otp_step_service.settings import ServiceSettings
from otp_step_service.steps.challenges import ChallengeStore
from otp_step_service.steps.deadline import Deadline
from otp_step_service.steps.ports import CheckStatus, Connection, ConnectionCheck
from otp_step_service.transport.server import ServerLimits, StepExecutorServer

log = logging.getLogger(__name__)


class SelfTestFailedError(RuntimeError):
    """A connection failed its self-test and OTP_STEP_SELF_TEST=strict."""


def challenge_store(url: str) -> ChallengeStore:
    """The store named by OTP_STEP_CHALLENGE_STORE."""
    if url == "memory":
        return InMemoryChallengeStore()
    from otp_step_service.adapters.redis_store import RedisChallengeStore

    return RedisChallengeStore.from_url(url)


def self_test_all(
    connections: Mapping[str, Connection], timeout: float = 10.0
) -> dict[str, Sequence[ConnectionCheck]]:
    """Run every connection's self-test (never sends a code)."""
    return {name: c.gateway.self_test(Deadline.after(timeout)) for name, c in connections.items()}


def report_self_test(results: Mapping[str, Sequence[ConnectionCheck]]) -> bool:
    """Log each finding once; True when nothing failed."""
    ok = True
    for name, checks in results.items():
        for check in checks:
            level = logging.WARNING if check.status is CheckStatus.FAILED else logging.INFO
            ok &= check.status is not CheckStatus.FAILED
            log.log(level, "connection %s: %s %s — %s", name, check.name, check.status.value, check.detail)
    return ok


def check_connections(connections: Mapping[str, Connection], mode: str) -> None:
    """The start-up self-test per OTP_STEP_SELF_TEST: 'warn' logs, 'strict' raises, 'off' skips it."""
    if mode == "off":
        return
    if not report_self_test(self_test_all(connections)) and mode == "strict":
        raise SelfTestFailedError("a connection failed its self-test (OTP_STEP_SELF_TEST=strict)")


@dataclass
class Service:
    """A built service, ready to start."""

    server: StepExecutorServer
    runner: StepRunner
    settings: ServiceSettings

    @classmethod
    def build(cls, settings: ServiceSettings, tracing: bool = False) -> Service:
        """Validate the configuration and bind the port (configuration errors raise here, before serving)."""
        connections = build_connections(settings.connections_path, max_connections=settings.workers)
        runner = StepRunner(connections, challenge_store(settings.challenge_store))
        limits = ServerLimits(
            workers=settings.workers,
            max_concurrent_steps=settings.max_concurrent_steps,
            max_message_bytes=settings.max_message_bytes,
            reuse_port=settings.processes > 1,
        )
        server = StepExecutorServer(runner, settings.listen, limits, tracing=tracing)
        return cls(server, runner, settings)

    def prepare(self, self_test: bool = True) -> None:
        """Self-test the connections (per OTP_STEP_SELF_TEST) and warm their clients and keys."""
        if self_test:
            check_connections(self.runner.connections, self.settings.self_test)
        for name, connection in self.runner.connections.items():
            try:
                connection.gateway.warm_up()
                connection.verifier.warm_up()
            except Exception as exc:  # warming is an optimisation; the first step will retry it
                log.warning("connection %s: could not warm up (%s)", name, type(exc).__name__)
