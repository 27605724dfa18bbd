"""Fault injection: latency, Cognito-shaped errors and dropped connections, per operation.

Contract (``POST /_faults``)::

    {"operation": "InitiateAuth" | "*", "latency_ms": 250,
     "error": "TooManyRequestsException" | "InternalErrorException" | "DropConnection",
     "rate": 1.0, "count": 2}

``operation`` is the ``X-Amz-Target`` action name. ``error`` is optional (latency alone is fine),
``rate`` (0..1, default 1) is the chance that a matching call is hit, ``count`` (optional) expires the
fault after it has hit that many calls. All matching faults apply: their latencies add up, and the first
error (in creation order) wins.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

FaultError = Literal["TooManyRequestsException", "InternalErrorException", "DropConnection"]
FAULT_ERRORS: tuple[FaultError, ...] = (
    "TooManyRequestsException",
    "InternalErrorException",
    "DropConnection",
)

#: Status and message Cognito uses for each injectable error (DropConnection sends nothing).
ERROR_RESPONSES: dict[str, tuple[int, str]] = {
    "TooManyRequestsException": (400, "Too many requests"),
    "InternalErrorException": (500, "Internal server error."),
}


class FaultSpecError(ValueError):
    """The fault JSON is invalid; the message names the field."""


@dataclass
class Fault:
    """One injected fault. ``remaining`` counts down from ``count``; ``None`` means no expiry."""

    id: str
    operation: str
    latency_ms: int = 0
    error: FaultError | None = None
    rate: float = 1.0
    count: int | None = None
    remaining: int | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        """The fault as returned by ``POST`` / ``GET /_faults``."""
        return asdict(self)

    @classmethod
    def from_json(cls, fault_id: str, spec: Mapping[str, Any]) -> Fault:
        """Validate a ``POST /_faults`` body."""
        if not isinstance(spec, Mapping):
            raise FaultSpecError("the body must be a JSON object")
        unknown = sorted(set(spec) - {"operation", "latency_ms", "error", "rate", "count"})
        if unknown:
            raise FaultSpecError(f"unknown field(s) {unknown}")
        operation = spec.get("operation")
        if not isinstance(operation, str) or not operation:
            raise FaultSpecError("'operation' is required: an X-Amz-Target action name or '*'")
        latency = spec.get("latency_ms", 0)
        if isinstance(latency, bool) or not isinstance(latency, (int, float)) or latency < 0:
            raise FaultSpecError("'latency_ms' must be a number >= 0")
        error = spec.get("error")
        if error is not None and error not in FAULT_ERRORS:
            raise FaultSpecError(f"'error' must be one of {list(FAULT_ERRORS)} or absent")
        rate = spec.get("rate", 1.0)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise FaultSpecError("'rate' must be a number between 0 and 1")
        count = spec.get("count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise FaultSpecError("'count' must be an integer >= 1 or absent")
        if not latency and error is None:
            raise FaultSpecError("a fault needs 'latency_ms' > 0, an 'error', or both")
        return cls(
            id=fault_id,
            operation=operation,
            latency_ms=int(latency),
            error=error,
            rate=float(rate),
            count=count,
            remaining=count,
        )


@dataclass(frozen=True)
class FaultOutcome:
    """What to do to one request: wait ``latency_ms`` first, then fail with ``error`` if set."""

    latency_ms: int
    error: FaultError | None


class FaultRegistry:
    """The active faults, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)
        # Not for security: only decides whether a fault with rate < 1 hits this call.
        self._random = random.Random()

    def add(self, spec: Mapping[str, Any]) -> Fault:
        """Validate and register a fault."""
        with self._lock:
            fault = Fault.from_json(f"fault-{next(self._ids)}", spec)
            self._faults.append(fault)
            return fault

    def list(self) -> list[Fault]:
        """The active faults in creation order."""
        with self._lock:
            return list(self._faults)

    def remove(self, fault_id: str) -> bool:
        """Remove one fault; ``False`` if there was none with that id."""
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            return len(self._faults) != before

    def clear(self) -> int:
        """Remove every fault; how many there were."""
        with self._lock:
            count = len(self._faults)
            self._faults.clear()
            return count

    def outcome_for(self, operation: str) -> FaultOutcome | None:
        """Roll the matching faults for one call, consuming their counts; ``None`` if none hit."""
        if not self._faults:  # lock-free fast path for the common case (a stale read only delays a fault)
            return None
        latency = 0
        error: FaultError | None = None
        hit = False
        with self._lock:
            for fault in list(self._faults):
                if fault.operation not in ("*", operation):
                    continue
                if fault.rate < 1.0 and self._random.random() >= fault.rate:
                    continue
                hit = True
                latency += fault.latency_ms
                if error is None and fault.error is not None:
                    error = fault.error
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
        return FaultOutcome(latency_ms=latency, error=error) if hit else None
