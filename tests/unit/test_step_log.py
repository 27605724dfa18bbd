"""Log lines: one record a line whatever its fields hold, and the trace context of where it was logged."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from otp_step_service.observability.step_log import (
    STEP_FIELDS,
    JsonFormatter,
    LoopSafeQueueHandler,
    TextFormatter,
)

# Every character that splits a line for str.splitlines() or reorders text on a terminal, and a CSI.
HOSTILE = (
    "a\nb\rc\x0bd\x0ce\x1cf\x1dg\x1eh\x85i\u2028j\u2029k\x7fl\x9b31mm\u202en\u2066o\u2067p\u2068q\u2069"
    "r\u200es\u200ft\u061cu\u202av\u202bw\u202cx\u202dy\x1b[2Jz\x00"
)
SPLITTING = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
BIDI_AND_CONTROLS = "\x7f\x9b\x85\x1b\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c\u202a\u202b\u202c\u202d"


def _record(message: str, step: dict[str, str]) -> logging.LogRecord:
    record = logging.LogRecord("otp_step_service.test", logging.INFO, __file__, 1, message, None, None)
    record.step = step
    return record


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_no_field_can_break_a_record_into_lines_or_reorder_it(formatter: logging.Formatter) -> None:
    step = {field: f"{field}:{HOSTILE}" for field in STEP_FIELDS}
    line = formatter.format(_record(f"message {HOSTILE}", step))
    assert len(line.splitlines()) == 1
    assert not any(c in line for c in SPLITTING + BIDI_AND_CONTROLS)
    for value in step.values():  # every field is there, escaped rather than left out
        assert value.split(":")[0] in line


def test_a_json_record_still_reads_back_as_the_values_logged() -> None:
    step = {"journey_id": HOSTILE, "identifier": "Zoë \u202eevil", "step_id": "send\u2028code"}
    entry = json.loads(JsonFormatter().format(_record("step.completed", step)))
    assert entry["journey_id"] == HOSTILE
    assert entry["identifier"] == "Zoë \u202eevil"
    assert entry["step_id"] == "send\u2028code"
    assert "Zoë" in JsonFormatter().format(_record("x", step))  # readable text stays readable


def test_a_record_carries_the_trace_and_span_of_where_it_was_logged() -> None:
    queued: list[logging.LogRecord] = []

    class Queue:
        def put_nowait(self, record: logging.LogRecord) -> None:
            queued.append(record)

    handler = LoopSafeQueueHandler(Queue())  # type: ignore[arg-type]
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("step") as span:
        handler.handle(_record("inside", {}))
    handler.handle(_record("outside", {}))
    inside, outside = (json.loads(JsonFormatter().format(r)) for r in queued)
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in outside and "span_id" not in outside
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_exit_is_not_held_by_a_writer_stuck_on_a_stalled_stderr() -> None:
    import logging.handlers
    import queue
    import threading
    import time

    from otp_step_service.observability import step_log

    release = threading.Event()

    class Stalled(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            release.wait(30)  # a stderr pipe nobody reads

    records: queue.Queue[logging.LogRecord] = queue.Queue(100)
    listener = logging.handlers.QueueListener(records, Stalled())
    listener.start()
    saved, step_log._listener = step_log._listener, listener
    try:
        for _ in range(3):
            records.put_nowait(logging.makeLogRecord({"msg": "queued"}))
        started = time.monotonic()
        step_log.flush_logs()
        waited = time.monotonic() - started
    finally:
        release.set()
        step_log._listener = saved
    assert waited < step_log.EXIT_WAIT_SECONDS + 1.0, waited


def test_otlp_export_gets_the_exception_type_but_not_its_message_traceback_or_unlisted_step_fields() -> None:
    import logging
    import sys

    from otp_step_service.observability.step_log import otlp_safe

    try:
        raise ValueError("code 12345678 for ada@example.com")
    except ValueError:
        record = logging.makeLogRecord(
            {"msg": "step failed", "exc_info": sys.exc_info(), "step": {"step_type": "x", "code": "12345678"}}
        )
    safe = otlp_safe(record)
    assert safe.exc_info is None and safe.exc_text is None and safe.stack_info is None
    assert safe.exception_type == "ValueError"
    assert "code" not in safe.step and safe.step.get("step_type") == "x"
    assert "12345678" not in repr(vars(safe))
    assert record.exc_info is not None  # the stderr writer's record is left as it was
