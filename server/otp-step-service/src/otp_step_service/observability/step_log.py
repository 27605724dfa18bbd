"""Structured logs: one JSON line per record, one `step.completed` record per step.

Only fields named here reach the log, so a secret cannot slip in through an f-string: step records carry ids,
names, the outcome and the failure code, never the identifier in clear, a code, a session or a token.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any

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
)


class JsonFormatter(logging.Formatter):
    """Formats records as single-line JSON objects."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON: time, level, logger, message, and whitelisted step fields."""
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        step = getattr(record, "step", None)
        if isinstance(step, dict):
            entry.update({k: step[k] for k in STEP_FIELDS if k in step and step[k] not in (None, "")})
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type and where it happened; not its message, which could quote Cognito's input.
            entry["exception"] = record.exc_info[0].__name__
            entry["stack"] = "".join(traceback.format_tb(record.exc_info[2]))
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str) -> None:
    """JSON lines on stderr for the whole process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # botocore logs request bodies (USERNAME, codes, sessions) at DEBUG: never let it below WARNING.
    for noisy in ("botocore", "aiobotocore", "boto3", "urllib3", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
