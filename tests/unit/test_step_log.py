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
