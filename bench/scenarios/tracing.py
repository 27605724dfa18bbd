"""Tracing overhead: the same load with tracing off, on (every step exported to Jaeger), and sampled; what
a refused call's span costs; and whether any span was dropped."""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.ghz import LoadResult
from bench.scenarios.core import (
    SIDE_BY_SIDE_PAIRS,
    SIDE_BY_SIDE_RATE,
    SIDE_BY_SIDE_WINDOWS,
    Bench,
    ScenarioResult,
)
from bench.stack import start_jaeger, start_standin


# ---------------------------------------------------------------------------------------------------------
# Telemetry overhead: scenario 2 with tracing off and on (OTLP to a local Jaeger), interleaved.
def tracing_overhead(bench: Bench, jaeger_binary: str) -> None:
    """Throughput with tracing off and on (default sampler; 10% sampled; nothing sampled), same load, the
    services on a core of their own; then refused calls, traced and not.

    This group runs more repetitions than the others: run-to-run noise on this machine is ±10%.
    """
    with bench.pinned():
        _tracing_overhead(bench, jaeger_binary)


def _tracing_overhead(bench: Bench, jaeger_binary: str) -> None:
    plan = bench.plan
    repetitions = plan.repetitions if plan.quick else max(plan.repetitions, 5)
    collector = start_jaeger(bench.logs, jaeger_binary, cpus=bench.load_cpus)
    jaeger, ui = collector.process, collector.ui
    standin = start_standin(bench.logs, "standin-tracing", cpus=bench.load_cpus)
    connections = bench.standin_connection(standin, name="standin-tracing")
    otlp_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.otlp_grpc, "OTEL_TRACES_EXPORTER": "otlp"}
    off = bench.service("service-tracing-off", connections)
    on = bench.service("service-tracing-on", connections, env=otlp_env)
    sampled_env = {
        **otlp_env,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    }
    unsampled_env = {**otlp_env, "OTEL_TRACES_SAMPLER": "parentbased_always_off"}
    sampled = bench.service("service-tracing-sampled", connections, env=sampled_env)
    unsampled = bench.service("service-tracing-unsampled", connections, env=unsampled_env)
    off_result = ScenarioResult("t-tracing-off", "Service cost, tracing off", "req/s")
    on_result = ScenarioResult("t-tracing-on", f"Service cost, tracing on (OTLP to Jaeger, {ui})", "req/s")
    sampled_result = ScenarioResult(
        "t-tracing-10pct", "Service cost, tracing on, 10% of traces sampled", "req/s"
    )
    unsampled_result = ScenarioResult(
        "t-tracing-unsampled", "Service cost, tracing on, nothing sampled (parentbased_always_off)", "req/s"
    )
    pairs = (
        (off, off_result),
        (on, on_result),
        (sampled, sampled_result),
        (unsampled, unsampled_result),
    )
    with bench.running(jaeger, standin.process, *(service.process for service, _ in pairs)):
        for service, _ in pairs:
            bench.ghz(service, bench.generate_load(plan.warmup_seconds), {"service": service.process})
        for rep in range(repetitions):
            bench.say(f"tracing: repetition {rep + 1}/{repetitions}")
            for service, scenario in pairs:
                watched = {"service": service.process, "stand-in": standin.process, "jaeger": jaeger}
                scenario.runs.append(bench.ghz(service, bench.generate_load(plan.seconds), watched))
        bench.side_by_side_pairs(
            "tracing",
            connections,
            ({}, off_result),
            [
                ("on", otlp_env, on_result),
                ("sampled", sampled_env, sampled_result),
                ("unsampled", unsampled_env, unsampled_result),
            ],
            pairs=1 if plan.quick else SIDE_BY_SIDE_PAIRS,
            windows=1 if plan.quick else SIDE_BY_SIDE_WINDOWS,
        )
        on_result.extra["jaeger_ui"] = ui
        on_result.extra["traces_seen"] = jaeger_trace_count(ui, "otp-step-service-service-tracing-on")
        refused = refused_call_cost(bench, connections, otlp_env, repetitions)  # while Jaeger runs
    for service, scenario in pairs:
        bench.add_step_errors(service, scenario)
        # What the span processor did, read once each service stopped and flushed (tracing on only).
        if service is not off:
            scenario.extra["spans"] = _span_totals(
                [service.span_counts(), *scenario.extra.pop("pair_spans", [])]
            )
    bench.results += [result for _, result in pairs] + refused


def _span_totals(counts: list[dict[str, Any]]) -> dict[str, Any]:
    """The span counts of several services added up (exported, and dropped by reason)."""
    dropped: dict[str, int] = {}
    for each in counts:
        for reason, count in (each.get("dropped") or {}).items():
            dropped[reason] = dropped.get(reason, 0) + int(count)
    return {"exported": sum(int(each.get("exported", 0)) for each in counts), "dropped": dropped}


# ---------------------------------------------------------------------------------------------------------
# Refused calls: a caller over its step rate, refused before any step runs, with and without its span.
REFUSED = "ResourceExhausted"


def refused_call_cost(
    bench: Bench, connections: Path, otlp_env: Mapping[str, str], repetitions: int
) -> list[ScenarioResult]:
    """CPU per refused call at a fixed rate, tracing off and on side by side, on fresh pairs of processes
    (as the tracing figures): every call but one a second is over the caller's step rate
    (OTP_STEP_STEPS_PER_SECOND_PER_CALLER=1) and refused by the rate check, which is where a refused call
    costs least, so its span weighs most."""
    plan = bench.plan
    rate_env = {"OTP_STEP_STEPS_PER_SECOND_PER_CALLER": "1"}
    off_result = ScenarioResult(
        "t-refused-off", "Refused calls (over the caller's step rate), tracing off", "calls/s"
    )
    on_result = ScenarioResult("t-refused-on", "Refused calls, tracing on (a span each)", "calls/s")
    rate = SIDE_BY_SIDE_RATE if not plan.quick else 20
    pairs = 1 if plan.quick else SIDE_BY_SIDE_PAIRS
    windows = max(1, repetitions // 2) if not plan.quick else 1
    spans = []
    for number in range(pairs):
        bench.say(f"refused calls at {rate} calls/s, side by side: pair {number + 1}/{pairs}")
        off = bench.service(f"service-refusing-off-{number}", connections, env=rate_env)
        on = bench.service(f"service-refusing-on-{number}", connections, env={**rate_env, **otlp_env})
        with bench.running(off.process, on.process):
            warm = dataclasses.replace(bench.generate_load(plan.warmup_seconds), rate=rate)
            bench.side_by_side([(off, warm), (on, warm)])
            for _ in range(windows):
                load = dataclasses.replace(bench.generate_load(plan.seconds), rate=rate)
                base_run, run = bench.side_by_side([(off, load), (on, load)])
                off_result.runs.append(_refused(base_run))
                on_result.runs.append(_refused(run))
                # The span's cost from this window alone: the two services saw the same machine.
                run.extra["cpu_ms_added"] = round(
                    run.extra["cpu_ms_per_call"] - base_run.extra["cpu_ms_per_call"], 4
                )
        bench.add_step_errors(off, off_result)
        bench.add_step_errors(on, on_result)
        spans.append(on.span_counts())
    for result in (off_result, on_result):
        result.extra["fixed_rate"] = rate
    on_result.extra["spans"] = _span_totals(spans)
    return [off_result, on_result]


def _refused(run: LoadResult) -> LoadResult:
    # Refusals are what this scenario asks for, not errors; their count and the CPU each call cost are kept.
    refused = run.errors.pop(f"grpc:{REFUSED}", 0)
    run.extra["refused"] = refused
    calls_per_second = run.requests / run.seconds if run.seconds else 0.0
    # The window's own CPU per call answered, refused or not (Bench.side_by_side).
    run.extra["cpu_ms_per_call"] = run.extra["service_cpu_ms_per_request"]
    run.rps = calls_per_second
    return run


def jaeger_trace_count(ui: str, service_name: str) -> int:
    """Traces Jaeger holds for the service (proof the exporter reached it); -1 if the query failed."""
    url = f"{ui}/api/traces?service={service_name}&limit=20&lookback=1h"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - loopback
            return len(json.load(answer).get("data") or [])
    except (OSError, ValueError):
        return -1
