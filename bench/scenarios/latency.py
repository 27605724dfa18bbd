"""Latency hiding: a slow Cognito (the stand-in's delay) with many steps in flight."""

from __future__ import annotations

from bench.scenarios.core import LITTLE_DELAY_MS, Bench, ScenarioResult
from bench.stack import (
    start_standin,
)


# ---------------------------------------------------------------------------------------------------------
# Scenario 4: Cognito answers after 100 ms; 50 in flight.
def latency_hiding(bench: Bench) -> None:
    """Little's law: 50 in flight / 0.1 s = 500 req/s at best."""
    plan = bench.plan
    standin = start_standin(bench.logs, "standin-100ms", delay_ms=LITTLE_DELAY_MS)
    connections = bench.standin_connection(standin, name="standin-100ms")
    service = bench.service("service-100ms", connections)
    scenario = ScenarioResult(
        "4-latency-hiding",
        f"Latency hiding: stand-in answers after {LITTLE_DELAY_MS:g} ms, 50 in flight",
        "req/s",
    )
    scenario.extra["little_bound_rps"] = 50 / (LITTLE_DELAY_MS / 1000)
    with bench.running(standin.process, service.process):
        watched = {"service": service.process, "stand-in": standin.process}
        bench.ghz(service, bench.generate_load(plan.warmup_seconds, concurrency=50), watched)
        for rep in range(plan.repetitions):
            bench.say(f"scenario 4: repetition {rep + 1}/{plan.repetitions}")
            scenario.runs.append(
                bench.ghz(service, bench.generate_load(plan.seconds, concurrency=50), watched)
            )
    scenario.step_errors = bench.step_errors(service)
    bench.results.append(scenario)
