"""An exporter process for tests: `python span_sink.py OUT FD` writes each exported span to OUT as a JSON line.

The real entry point (`span_export.main`) with the OTLP exporter swapped for one that writes a file.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from otp_step_service import span_export


class FileExporter(SpanExporter):
    """One JSON line per span: name, ids, parent and attributes."""

    def __init__(self, path: str) -> None:
        self._path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self._path, "a") as out:
            for span in spans:
                assert span.context is not None
                line = {
                    "name": span.name,
                    "trace_id": span.context.trace_id,
                    "span_id": span.context.span_id,
                    "parent_span_id": span.parent.span_id if span.parent else None,
                    "attributes": dict(span.attributes or {}),
                    "service": span.resource.attributes.get("service.name"),
                }
                out.write(json.dumps(line) + "\n")
        return SpanExportResult.SUCCESS


if __name__ == "__main__":
    sys.exit(span_export.main(sys.argv[2:], make_exporter=lambda: FileExporter(sys.argv[1])))
