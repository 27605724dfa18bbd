"""The service as `python -m otp_step_service serve` runs it, plus a count of step outcomes.

ghz sees gRPC statuses only; a step that ran and took its failure branch (a Cognito timeout, say) is an OK
RPC. To count such failures as errors, this runs the service's own entry point with the StepRunner's two
step methods wrapped: each finished step is counted by step type and outcome (a dict increment, as the
bare floor counts its own), and the counts are written as JSON to `$BENCH_OUTCOMES_FILE` at exit. The
service logs as it would anyway (nothing per step below INFO): counting through the step log instead made
every step build its log record, a cost the service does not have.

    BENCH_OUTCOMES_FILE=outcomes.json python -m bench.counted_service serve --listen ... --connections ...

With tracing on, the span processor's counts (exported, dropped by reason) are written beside the outcomes,
to `outcomes.spans.json`, once the service has stopped and flushed its spans.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from otp_step_service.app.cli import main as serve
from otp_step_service.app.execution import GENERATE, VALIDATE, Executed, StepRunner
from otp_step_service.observability.span_export import SPAN_EXPORT

OUTCOMES_FILE = "BENCH_OUTCOMES_FILE"

Step = Callable[..., Awaitable[Executed[Any]]]


def counting(step: Step, step_type: str, counts: Counter[str]) -> Step:
    """`step`, counting each outcome as `step_type:outcome[:failure code]`."""

    async def counted(runner: StepRunner, *args: Any) -> Executed[Any]:
        executed = await step(runner, *args)
        failure = executed.outcome.failed
        counts[f"{step_type}:{executed.outcome.kind}" + (f":{failure.code.value}" if failure else "")] += 1
        return executed

    return counted


def main(argv: list[str] | None = None) -> int:
    """Run the service's main() with the steps counted; write the counts when it returns."""
    counts: Counter[str] = Counter()
    StepRunner.generate = counting(StepRunner.generate, GENERATE, counts)  # type: ignore[method-assign,assignment]
    StepRunner.validate = counting(StepRunner.validate, VALIDATE, counts)  # type: ignore[method-assign,assignment]
    try:
        return serve(argv)
    finally:
        target = os.environ.get(OUTCOMES_FILE)
        if target:
            Path(target).write_text(json.dumps(dict(counts), sort_keys=True))
            spans = {"exported": SPAN_EXPORT.exported, "dropped": dict(SPAN_EXPORT.dropped)}
            # Read by bench.stack.ServiceProcess.span_counts.
            Path(target).with_suffix(".spans.json").write_text(json.dumps(spans, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
