"""A ChallengeStore that times every operation of another one and counts its failures (a decorator, so the
memory and Redis stores stay free of metrics and any store can be measured the same way)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Coroutine, Sequence
from typing import Any, TypeVar

from prometheus_client import Counter, Histogram

from otp_step_service.observability.metrics import Metrics, Series
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
    each operation of `inner`; answers and errors pass through unchanged.

    Each operation returns the timing coroutine itself (a plain method, not `async def` awaiting it): one
    coroutine frame less per store operation, on every step. The inner store's coroutine is made at the call,
    so an operation never awaited warns for both coroutines, not one."""

    def __init__(self, inner: ChallengeStore, metrics: Metrics) -> None:
        self.inner = inner
        self._duration: Series[Histogram] = metrics.store_duration
        self._errors: Series[Counter] = metrics.store_errors

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

    def begin_send(self, request: SendRequest) -> Coroutine[Any, Any, SendReservation]:
        """See ChallengeStore.begin_send."""
        return self._timed("begin_send", self.inner.begin_send(request))

    def finish_send(
        self, request: SendRequest, result: SendResult, challenge: Challenge | None
    ) -> Coroutine[Any, Any, None]:
        """See ChallengeStore.finish_send."""
        return self._timed("finish_send", self.inner.finish_send(request, result, challenge))

    def begin_attempt(self, request: AttemptRequest) -> Coroutine[Any, Any, AttemptGrant]:
        """See ChallengeStore.begin_attempt."""
        return self._timed("begin_attempt", self.inner.begin_attempt(request))

    def finish_attempt(
        self, key: ChallengeKey, nonce: str, judgement: Judgement, lockout_subjects: Sequence[str]
    ) -> Coroutine[Any, Any, None]:
        """See ChallengeStore.finish_attempt."""
        return self._timed(
            "finish_attempt", self.inner.finish_attempt(key, nonce, judgement, lockout_subjects)
        )

    def load(self, key: ChallengeKey) -> Coroutine[Any, Any, Challenge | None]:
        """See ChallengeStore.load."""
        return self._timed("load", self.inner.load(key))

    def events(self, connection: str, subject: str) -> Coroutine[Any, Any, int]:
        """See ChallengeStore.events."""
        return self._timed("events", self.inner.events(connection, subject))

    async def aclose(self) -> None:
        """Close the wrapped store."""
        await self.inner.aclose()
