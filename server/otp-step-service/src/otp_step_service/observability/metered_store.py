"""A ChallengeStore that times every operation of another one and counts its failures (a decorator, so the
memory and Redis stores stay free of metrics and any store can be measured the same way)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from prometheus_client import Counter, Histogram

from otp_step_service.observability.metrics import Metrics
from otp_step_service.steps.challenges import (
    AttemptGrant,
    AttemptRequest,
    Challenge,
    ChallengeKey,
    Judgement,
    SendRequest,
    SendReservation,
    SendResult,
)
from otp_step_service.steps.ports import ChallengeStore

T = TypeVar("T")


class MeteredChallengeStore:
    """Records `otp_challenge_store_operation_duration_seconds` and `otp_challenge_store_errors_total` around
    each operation of `inner`; answers and errors pass through unchanged."""

    def __init__(self, inner: ChallengeStore, metrics: Metrics) -> None:
        self.inner = inner
        self._duration: Histogram = metrics.store_duration
        self._errors: Counter = metrics.store_errors

    async def _timed(self, operation: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await call
        except Exception as exc:
            # The cause names what failed underneath (ConnectionError, TimeoutError), not our wrapper.
            self._errors.labels(operation, type(exc.__cause__ or exc).__name__).inc()
            raise
        finally:
            self._duration.labels(operation).observe(time.perf_counter() - started)

    async def begin_send(self, request: SendRequest) -> SendReservation:
        """See ChallengeStore.begin_send."""
        return await self._timed("begin_send", self.inner.begin_send(request))

    async def finish_send(
        self, request: SendRequest, result: SendResult, challenge: Challenge | None
    ) -> None:
        """See ChallengeStore.finish_send."""
        await self._timed("finish_send", self.inner.finish_send(request, result, challenge))

    async def begin_attempt(self, request: AttemptRequest) -> AttemptGrant:
        """See ChallengeStore.begin_attempt."""
        return await self._timed("begin_attempt", self.inner.begin_attempt(request))

    async def finish_attempt(
        self, key: ChallengeKey, nonce: str, judgement: Judgement, lockout_subjects: Sequence[str]
    ) -> None:
        """See ChallengeStore.finish_attempt."""
        await self._timed(
            "finish_attempt", self.inner.finish_attempt(key, nonce, judgement, lockout_subjects)
        )

    async def load(self, key: ChallengeKey) -> Challenge | None:
        """See ChallengeStore.load."""
        return await self._timed("load", self.inner.load(key))

    async def events(self, connection: str, subject: str) -> int:
        """See ChallengeStore.events."""
        return await self._timed("events", self.inner.events(connection, subject))

    async def aclose(self) -> None:
        """Close the wrapped store."""
        await self.inner.aclose()
