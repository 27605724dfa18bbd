"""Structured logs: one record a line (OTP_STEP_LOG_FORMAT: `json`, the default, or `text`), written off the
event loop, one `step.completed` record per step.

Only fields named here reach the log, so a secret cannot slip in through an f-string: step records carry ids,
names, the outcome and the failure code, never the identifier in clear, a code, a session or a token.

One record is one line whatever its fields hold: every control character (C0, DEL, C1 such as U+009B and
NEL U+0085), the line and paragraph separators U+2028 / U+2029 and the bidirectional controls (U+061C,
U+200E/F, U+202A-U+202E, U+2066-U+2069) are written as `\\uXXXX` escapes, in every field, so
`str.splitlines()` never cuts a record in two and a terminal never reorders one.

The event loop only puts records on a bounded in-process queue (`QueueHandler`); a listener thread formats
and writes them (`QueueListener`), so a slow or stalled stderr pipe never stalls a step. When the queue is
full a record is dropped and counted (`LOG_DROPS`), never waited for. Each record carries the `trace_id` and
`span_id` of the span current where it was logged (the OpenTelemetry log-correlation names). With
OTEL_LOGS_EXPORTER=otlp the records also go to an OTLP collector (the SDK's OTEL_EXPORTER_OTLP_[LOGS_]*
variables), from the same listener thread.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import json
import logging
import logging.handlers
import os
import queue
import re
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from typing import Any, Literal

from opentelemetry import trace

from otp_step_service.observability import otel_env

# Fields a record may carry through `extra={"step": {...}}`.
STEP_FIELDS = (
    "step_type",
    "journey_id",
    "journey_run_id",
    "step_id",
    "tenant_id",
    "connection",
    "channel",
    "identifier",
    "outcome",
    "failure_code",
    "category",
    "retryable",
    "attempts_remaining",
    "cognito_error",
    "duration_ms",
    "trace_id",
    "span_id",
)

LogFormat = Literal["json", "text"]

# Records waiting for the writer thread; beyond this they are dropped (a stalled stderr must not grow memory).
QUEUE_RECORDS = 10_000

# What must never reach a log line raw (see the module docstring).
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def escape(text: str) -> str:
    """`text` with every control, separator and bidi character as a `\\uXXXX` escape."""
    return UNSAFE.sub(_escaped, text)


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    trace_id = getattr(record, "otel_trace_id", "")
    if trace_id:
        entry["trace_id"] = trace_id
        entry["span_id"] = getattr(record, "otel_span_id", "")
    step = getattr(record, "step", None)
    if isinstance(step, dict):
        entry.update({k: step[k] for k in STEP_FIELDS if k in step and step[k] not in (None, "")})
    if record.exc_info and record.exc_info[0] is not None:
        # The exception type and where it happened; not its message, which could quote Cognito's input.
        entry["exception"] = record.exc_info[0].__name__
        entry["stack"] = "".join(traceback.format_tb(record.exc_info[2]))
    return entry


class JsonFormatter(logging.Formatter):
    """Formats records as single-line JSON objects."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON: time, level, logger, message, trace context and whitelisted step fields."""
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
            **_fields(record),
        }
        # json escapes C0 controls; ensure_ascii=False keeps other text readable, so the rest is escaped
        # here (inside strings only: nothing outside a JSON string can be such a character).
        return escape(json.dumps(entry, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message key=value ...`, values quoted when they hold spaces or quotes."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of text."""
        parts = [_timestamp(record), record.levelname, record.name, escape(record.getMessage())]
        for key, value in _fields(record).items():
            text = str(value)
            if not text or any(c in text for c in ' "=\\') or UNSAFE.search(text):
                text = json.dumps(text, ensure_ascii=False)
            parts.append(f"{key}={escape(text)}")
        return " ".join(parts)


class LogDrops:
    """Records dropped because the writer queue was full (its writer is stalled)."""

    def __init__(self) -> None:
        self.count = 0


LOG_DROPS = LogDrops()
# The OTLP log provider, when OTEL_LOGS_EXPORTER=otlp: flushed by a forked server process before it exits.
_otlp_provider: Any = None


class LoopSafeQueueHandler(logging.handlers.QueueHandler):
    """Puts records on the writer's queue without ever waiting: the trace context is taken here (it lives in
    this thread's context), the formatting is left to the writer thread."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """A copy with the message merged and the current span's ids; exc_info kept for the writer."""
        prepared = copy.copy(record)
        prepared.msg = record.getMessage()
        prepared.args = None
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            prepared.otel_trace_id = format(context.trace_id, "032x")
            prepared.otel_span_id = format(context.span_id, "016x")
        return prepared

    def enqueue(self, record: logging.LogRecord) -> None:
        """Queue the record, or drop and count it when the queue is full."""
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            LOG_DROPS.count += 1


class _ContextualListener(logging.handlers.QueueListener):
    """Hands records to the OTLP log handler with the span context they were logged in."""

    def handle(self, record: logging.LogRecord) -> None:
        """Each handler with the record's own trace context current (the writer thread has none)."""
        trace_id = getattr(record, "otel_trace_id", "")
        if not trace_id:
            super().handle(record)
            return
        from opentelemetry import context as otel_context
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

        span = NonRecordingSpan(
            SpanContext(
                int(trace_id, 16),
                int(getattr(record, "otel_span_id", "0"), 16),
                True,
                TraceFlags(TraceFlags.SAMPLED),
            )
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            super().handle(record)
        finally:
            otel_context.detach(token)


_listener: logging.handlers.QueueListener | None = None
_configured: tuple[str, LogFormat] | None = None


def otlp_logs_configured(environ: Mapping[str, str] | None = None) -> bool:
    """OTEL_LOGS_EXPORTER=otlp (and the SDK not disabled)."""
    return not otel_env.sdk_disabled(environ) and "otlp" in otel_env.exporters(
        otel_env.OTEL_LOGS_EXPORTER, environ
    )


def _otlp_handler() -> logging.Handler:
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    from otp_step_service.observability.telemetry import tracing_resource

    if otel_env.protocol("logs") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import (  # type: ignore[assignment]
            OTLPLogExporter,
        )

    class RedactedOtlpHandler(LoggingHandler):
        """The SDK's handler, given only what the stderr line carries (see `otlp_safe`)."""

        def emit(self, record: logging.LogRecord) -> None:
            super().emit(otlp_safe(record))

    global _otlp_provider
    provider = LoggerProvider(resource=tracing_resource())
    provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    atexit.register(provider.shutdown)
    _otlp_provider = provider
    return RedactedOtlpHandler(logger_provider=provider)


def otlp_safe(record: logging.LogRecord) -> logging.LogRecord:
    """A copy fit for OTLP export: the exception's type but not its message or traceback (either may quote
    Cognito's input), and of a step's fields only the whitelisted ones, as on stderr."""
    safe = copy.copy(record)
    if record.exc_info and record.exc_info[0] is not None:
        safe.exception_type = record.exc_info[0].__name__
    safe.exc_info, safe.exc_text, safe.stack_info = None, None, None
    step = getattr(record, "step", None)
    if isinstance(step, dict):
        safe.step = {key: step[key] for key in STEP_FIELDS if key in step}
    return safe


def configure_logging(level: str, log_format: LogFormat = "json") -> None:
    """Records of the whole process to stderr, one a line in `log_format`, written by a thread of their own
    (and by OTLP too when OTEL_LOGS_EXPORTER=otlp)."""
    global _listener, _configured  # one writer per process
    _stop_listener()
    _configured = (level, log_format)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handlers: list[logging.Handler] = [stream]
    if otlp_logs_configured():
        handlers.append(_otlp_handler())
    records: queue.Queue[logging.LogRecord] = queue.Queue(QUEUE_RECORDS)
    _listener = _ContextualListener(records, *handlers, respect_handler_level=True)
    _listener.start()
    atexit.register(_stop_listener)
    root = logging.getLogger()
    root.handlers[:] = [LoopSafeQueueHandler(records)]
    root.setLevel(level)
    # botocore logs request bodies (USERNAME, codes, sessions) at DEBUG: never let it below WARNING.
    for noisy in ("botocore", "aiobotocore", "boto3", "urllib3", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _restart_in_child() -> None:
    # A forked server process (OTP_STEP_PROCESSES) inherits the queue but not the writer thread: it gets
    # a queue and a writer of its own.
    global _listener
    if _configured is not None and _listener is not None:
        _listener = None
        configure_logging(*_configured)


os.register_at_fork(after_in_child=_restart_in_child)


def flush_logs() -> None:
    """Write every queued record and end the writer (before `os._exit`, which skips atexit), and send what
    the OTLP log exporter still holds."""
    _stop_listener()
    if _otlp_provider is not None:
        _otlp_provider.force_flush(int(EXIT_WAIT_SECONDS * 1000))


# How long exit waits for the writer to drain the queue: a stalled stderr must not hold a process that was
# asked to stop (QueueListener.stop() joins its thread without a limit).
EXIT_WAIT_SECONDS = 2.0


def _stop_listener() -> None:
    """Write what is queued, then end the writer thread (at exit), waiting at most EXIT_WAIT_SECONDS."""
    global _listener
    listener, _listener = _listener, None
    if listener is None:
        return
    with contextlib.suppress(queue.Full):  # a full queue: the writer is stalled, and what is queued is lost
        listener.enqueue_sentinel()
    writer = getattr(listener, "_thread", None)
    if isinstance(writer, threading.Thread):
        writer.join(EXIT_WAIT_SECONDS)
