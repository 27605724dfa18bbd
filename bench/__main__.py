"""`python -m bench` (`make bench`): run the scenarios, write bench-results/<timestamp>/, print the summary.

    python -m bench                  # a few minutes; targets judged
    python -m bench --quick          # CI smoke: every scenario briefly, no pass/fail on figures
    python -m bench --tracing        # also scenario 2 with tracing off vs on (needs .bin/jaeger)
    python -m bench --only metrics   # metrics off vs on (scraped every second), CPU per step at a fixed rate
    python -m bench --only store_wait  # OTP_STEP_STORE_MIN_REPLICAS 0 vs 1: what WAIT costs per step

Exit status: 0 when every judged target passed, 1 when one failed, 2 when the harness itself could not run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import chart, report, scenarios
from bench.ghz import GhzError, find_ghz
from bench.processes import ProcessFailedError, stop_all
from bench.stack import ROOT, SAFE_AWS_ENV

SCENARIOS: dict[str, Callable[[scenarios.Bench], None]] = {
    "floors": scenarios.floors_and_service_cost,
    "scaling": scenarios.scaling,
    "latency": scenarios.latency_hiding,
    "journeys": scenarios.journeys,
    "memory": scenarios.memory,
    "metrics": scenarios.metrics_overhead,
    "store_wait": scenarios.store_wait,
}
TRACING = "tracing"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: seconds, not minutes")
    parser.add_argument("--tracing", action="store_true", help="add the tracing on/off comparison (Jaeger)")
    parser.add_argument(
        "--only",
        action="append",
        choices=[*SCENARIOS, TRACING],
        help="run only these scenario groups (repeatable; `tracing` implies --tracing)",
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="service OTP_STEP_LOG_LEVEL (INFO is measured as a variant)"
    )
    parser.add_argument("--results", type=Path, default=ROOT / "bench-results", help="results folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = _parser().parse_args(argv)
    os.environ.update(SAFE_AWS_ENV)  # the harness seeds the emulator with boto3: dummy credentials only
    make_plan = scenarios.Plan.smoke if args.quick else scenarios.Plan.full
    tracing = args.tracing or TRACING in (args.only or [])
    plan = make_plan(tracing=tracing, log_level=args.log_level.upper())
    try:
        find_ghz()
    except GhzError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    jaeger = shutil.which("jaeger", path=str(ROOT / ".bin")) or shutil.which("jaeger")
    if plan.tracing and not jaeger:
        print("bench: --tracing needs Jaeger: run `make tools` (installs .bin/jaeger)", file=sys.stderr)
        return 2
    folder = args.results.resolve() / time.strftime("%Y%m%d-%H%M%S")
    bench = scenarios.Bench(plan, folder)
    bench.say(f"results in {folder}")
    started = time.monotonic()
    chosen = [name for name in SCENARIOS if not args.only or name in args.only]
    stages = [*chosen, *([TRACING] if plan.tracing and jaeger else [])]
    try:
        for number, name in enumerate(stages, 1):
            bench.begin(number, len(stages), name)
            if name == TRACING and jaeger:
                scenarios.tracing_overhead(bench, jaeger)
            else:
                SCENARIOS[name](bench)
    except (
        ProcessFailedError,
        GhzError,
        TimeoutError,
        RuntimeError,
        OSError,
        subprocess.CalledProcessError,
    ) as exc:
        print(f"bench: {exc}\n(process logs in {bench.logs})", file=sys.stderr)
        return 2
    finally:
        stop_all()
    verdicts = report.judge(bench.results, plan)
    machine = scenarios.machine()
    machine["harness_seconds"] = round(time.monotonic() - started, 1)
    document = report.to_json(bench.results, verdicts, plan, machine)
    summary = report.to_markdown(bench.results, verdicts, plan, machine)
    report.write(folder, document, summary)
    chart.write_chart(
        document["scenarios"], folder / chart.CHART_NAME, report.chart_subtitle(document["plan"], machine)
    )
    shutil.rmtree(bench.work, ignore_errors=True)
    print(summary)
    print(f"Results: {folder}/results.json, summary.md, {chart.CHART_NAME} (also {folder.parent / 'latest'})")
    return 1 if any(v.passed is False for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
