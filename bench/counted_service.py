"""The service as `python -m otp_step_service serve` runs it, plus a count of step outcomes.

ghz sees gRPC statuses only; a step that ran and took its failure branch (a Cognito timeout, say) is an OK
RPC. To count such failures as errors without logging a JSON line per step, this runs the service's own
entry point with one extra handler on the step logger: it counts each `step.completed` record by step type
and outcome (a few microseconds per step), forwards records at or above the configured level to the
service's own log handler as before, and writes the counts as JSON to `$BENCH_OUTCOMES_FILE` at exit.

    BENCH_OUTCOMES_FILE=outcomes.json python -m bench.counted_service serve --listen ... --connections ...
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path

from otp_step_service.app.cli import main as serve

STEP_LOGGER = "otp_step_service.steps"
OUTCOMES_FILE = "BENCH_OUTCOMES_FILE"


class OutcomeCounter(logging.Handler):
    """Counts `step.completed` records; passes records at or above `forward_level` to the root handlers."""

    def __init__(self, forward_level: int) -> None:
        super().__init__(logging.DEBUG)
        self.forward_level = forward_level
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        """Count, then forward what the service would have logged anyway."""
        step = getattr(record, "step", None)
        if isinstance(step, dict) and "outcome" in step:
            code = step.get("failure_code")
            key = f"{step.get('step_type', '?')}:{step['outcome']}" + (f":{code}" if code else "")
            self.counts[key] += 1
        if record.levelno >= self.forward_level:
            for handler in logging.getLogger().handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)


def main(argv: list[str] | None = None) -> int:
    """Run the service's main() with the counter installed; write the counts when it returns."""
    level = logging.getLevelName(os.environ.get("OTP_STEP_LOG_LEVEL", "INFO").upper())
    counter = OutcomeCounter(level if isinstance(level, int) else logging.INFO)
    step_log = logging.getLogger(STEP_LOGGER)
    step_log.setLevel(logging.INFO)
    step_log.propagate = False
    step_log.addHandler(counter)
    try:
        return serve(argv)
    finally:
        target = os.environ.get(OUTCOMES_FILE)
        if target:
            Path(target).write_text(json.dumps(dict(counter.counts), sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
