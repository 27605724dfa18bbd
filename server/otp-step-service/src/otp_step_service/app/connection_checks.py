"""The connections' self-test at start-up and on reload, and closing their clients at shutdown.

Shared by the service, the reload and the command line, so none of them imports another for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from otp_step_service.steps.deadline import Deadline
from otp_step_service.steps.errors import ConfigurationError
from otp_step_service.steps.model import CheckStatus, ConnectionCheck
from otp_step_service.steps.ports import Connection

log = logging.getLogger(__name__)

SELF_TEST_SECONDS = 10.0


class SelfTestFailedError(ConfigurationError):
    """A connection failed its self-test and OTP_STEP_SELF_TEST=strict."""


async def self_test_all(
    connections: Mapping[str, Connection], timeout: float = SELF_TEST_SECONDS
) -> dict[str, Sequence[ConnectionCheck]]:
    """Run every connection's self-test concurrently (never sends a code)."""
    names = list(connections)
    results = await asyncio.gather(
        *(connections[n].gateway.self_test(Deadline.after(timeout)) for n in names)
    )
    return dict(zip(names, results, strict=True))


def report_self_test(results: Mapping[str, Sequence[ConnectionCheck]]) -> bool:
    """Log each finding once; True when nothing failed."""
    ok = True
    for name, checks in results.items():
        for check in checks:
            level = logging.WARNING if check.status is CheckStatus.FAILED else logging.INFO
            ok &= check.status is not CheckStatus.FAILED
            log.log(level, "connection %s: %s %s — %s", name, check.name, check.status.value, check.detail)
    return ok


async def check_connections(connections: Mapping[str, Connection], mode: str) -> None:
    """The start-up self-test per OTP_STEP_SELF_TEST: 'warn' logs, 'strict' raises, 'off' skips it."""
    if mode == "off":
        return
    if not report_self_test(await self_test_all(connections)) and mode == "strict":
        raise SelfTestFailedError("a connection failed its self-test (OTP_STEP_SELF_TEST=strict)")


async def close_connections(connections: Mapping[str, Connection]) -> None:
    """Close every connection's HTTP clients; one that fails to close does not keep the others open."""
    for name, connection in connections.items():
        for part in (connection.gateway, connection.verifier):
            try:
                await part.aclose()
            except Exception as exc:  # shutting down: log and go on
                log.warning("connection %s: could not close cleanly (%s)", name, type(exc).__name__)
