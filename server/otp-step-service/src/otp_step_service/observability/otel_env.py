"""The standard OTEL_* environment variables this service reads itself, each defined once with its default.

The SDK's exporters read their own endpoint, headers, timeout, compression and certificates
(OTEL_EXPORTER_OTLP_[SIGNAL_]*), and `Resource.create` reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES;
what is read here is what decides *whether* a signal is exported and *how* (protocol, interval, queue).
Every function takes the environment as a mapping (default `os.environ`) so tests need not patch it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Literal

log = logging.getLogger(__name__)

Signal = Literal["traces", "metrics", "logs"]

OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"
"""`true` turns every signal off whatever else is set; default false."""
OTEL_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
"""`otlp` exports spans, `none` turns tracing off; unset: traces are exported when an OTLP endpoint is set."""
OTEL_METRICS_EXPORTER = "OTEL_METRICS_EXPORTER"
"""`otlp` pushes the metrics registry by OTLP; unset (the default) or anything else: no push."""
OTEL_LOGS_EXPORTER = "OTEL_LOGS_EXPORTER"
"""`otlp` also sends log records by OTLP (beside stderr); unset (the default) or anything else: stderr only."""
OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
"""The collector for every signal; no default here (the SDK's is localhost:4317 / :4318)."""
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
"""The collector for spans only; overrides OTEL_EXPORTER_OTLP_ENDPOINT."""
OTEL_EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
"""`grpc` (the default) or `http/protobuf`, for every signal."""
OTEL_EXPORTER_OTLP_SIGNAL_PROTOCOL: Mapping[Signal, str] = {
    "traces": "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "metrics": "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "logs": "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
}
"""Per-signal protocol, overriding OTEL_EXPORTER_OTLP_PROTOCOL."""
DEFAULT_PROTOCOL = "grpc"
OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
"""The service name; default `otp-step-service` (unless OTEL_RESOURCE_ATTRIBUTES names one)."""
OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
"""`key=value,...` added to the resource of every signal."""
DEFAULT_SERVICE_NAME = "otp-step-service"
OTEL_METRIC_EXPORT_INTERVAL = "OTEL_METRIC_EXPORT_INTERVAL"
"""Milliseconds between metric exports; default 60000 (the specification's)."""
DEFAULT_METRIC_EXPORT_INTERVAL_MS = 60_000
OTEL_METRIC_EXPORT_TIMEOUT = "OTEL_METRIC_EXPORT_TIMEOUT"
"""Milliseconds one metric export may take, retries included; default 30000 (the specification's)."""
DEFAULT_METRIC_EXPORT_TIMEOUT_MS = 30_000
OTEL_BSP_SCHEDULE_DELAY = "OTEL_BSP_SCHEDULE_DELAY"
"""Milliseconds between span exports; default 200 here (the specification's 5000): the queue holds the ended
span objects until they are encoded and sent, and a short schedule keeps few of them alive and each batch's
encoding short (the sending thread holds the interpreter lock while it encodes)."""
DEFAULT_BSP_SCHEDULE_DELAY_MS = 200
OTEL_BSP_MAX_QUEUE_SIZE = "OTEL_BSP_MAX_QUEUE_SIZE"
"""Spans held for export before new ones are dropped (and counted); default 8192 (the specification's 2048
is two seconds of a saturated process)."""
DEFAULT_BSP_MAX_QUEUE_SIZE = 8_192
OTEL_BSP_MAX_EXPORT_BATCH_SIZE = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"
"""Spans per export request; default 512 (the specification's): a saturated process sends a few requests a
second, and no batch holds the interpreter lock long while it is encoded."""
DEFAULT_BSP_MAX_EXPORT_BATCH_SIZE = 512


def environment(environ: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """`environ`, else the process environment."""
    return os.environ if environ is None else environ


_env = environment


def sdk_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """OTEL_SDK_DISABLED=true."""
    return _env(environ).get(OTEL_SDK_DISABLED, "").strip().lower() == "true"


def exporters(variable: str, environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The comma-separated exporter names of OTEL_<SIGNAL>_EXPORTER, lower-cased."""
    raw = _env(environ).get(variable, "")
    return frozenset(part.strip().lower() for part in raw.split(",") if part.strip())


def protocol(signal: Signal, environ: Mapping[str, str] | None = None) -> str:
    """The OTLP protocol of `signal`: its own variable, else OTEL_EXPORTER_OTLP_PROTOCOL, else grpc."""
    env = _env(environ)
    value = env.get(OTEL_EXPORTER_OTLP_SIGNAL_PROTOCOL[signal]) or env.get(OTEL_EXPORTER_OTLP_PROTOCOL)
    return (value or DEFAULT_PROTOCOL).strip()


def positive_int(variable: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    """A positive integer variable (milliseconds, a size); a missing or invalid value gives `default` (an
    invalid one with a warning naming the variable)."""
    raw = _env(environ).get(variable, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        log.warning("%s=%r is not a positive whole number; using %d", variable, raw, default)
        return default
    return value


def service_named(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment names the service (OTEL_SERVICE_NAME, or service.name in the attributes)."""
    env = _env(environ)
    return OTEL_SERVICE_NAME in env or "service.name=" in env.get(OTEL_RESOURCE_ATTRIBUTES, "")
