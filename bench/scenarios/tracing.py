"""Tracing overhead: the same load with tracing off, on (every step exported to Jaeger), and sampled."""

from __future__ import annotations

import json
import urllib.request

from bench.scenarios.core import Bench, ScenarioResult
from bench.stack import (
    start_jaeger,
    start_standin,
)


# ---------------------------------------------------------------------------------------------------------
# Telemetry overhead: scenario 2 with tracing off and on (OTLP to a local Jaeger), interleaved.
def tracing_overhead(bench: Bench, jaeger_binary: str) -> None:
    """Throughput with tracing off and on (default sampler; 10% sampled; nothing sampled), same load.

    This group runs more repetitions than the others: run-to-run noise on this machine is ±10%.
    """
    plan = bench.plan
    repetitions = plan.repetitions if plan.quick else max(plan.repetitions, 5)
    collector = start_jaeger(bench.logs, jaeger_binary)
    jaeger, otlp, ui = collector.process, collector.otlp_grpc, collector.ui
    standin = start_standin(bench.logs, "standin-tracing")
    connections = bench.standin_connection(standin, name="standin-tracing")
    otlp_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp, "OTEL_TRACES_EXPORTER": "otlp"}
    off = bench.service("service-tracing-off", connections)
    on = bench.service("service-tracing-on", connections, env=otlp_env)
    sampled = bench.service(
        "service-tracing-sampled",
        connections,
        env={
            **otlp_env,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        },
    )
    unsampled = bench.service(
        "service-tracing-unsampled",
        connections,
        env={**otlp_env, "OTEL_TRACES_SAMPLER": "parentbased_always_off"},
    )
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
        bench.cpu_per_step_at_fixed_rate("tracing", pairs, repetitions)
        on_result.extra["jaeger_ui"] = ui
        on_result.extra["traces_seen"] = jaeger_trace_count(ui, "otp-step-service-service-tracing-on")
    for service, scenario in pairs:
        scenario.step_errors = bench.step_errors(service)
    bench.results += [result for _, result in pairs]


def jaeger_trace_count(ui: str, service_name: str) -> int:
    """Traces Jaeger holds for the service (proof the exporter reached it); -1 if the query failed."""
    url = f"{ui}/api/traces?service={service_name}&limit=20&lookback=1h"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - loopback
            return len(json.load(answer).get("data") or [])
    except (OSError, ValueError):
        return -1
