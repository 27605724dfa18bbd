"""The floors and the service cost: the transport alone, the bare grpc.aio + aiobotocore stack, boto3 threads,
and the service on the same stand-in, at saturation and at one fixed rate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import ghz
from bench.ghz import GhzLoad, LoadResult
from bench.processes import ManagedProcess
from bench.scenarios.core import PREVIOUS_SYNC_SERVICE, Bench, ScenarioResult
from bench.stack import (
    STANDIN_APP,
    Standin,
    start_standin,
)


# ---------------------------------------------------------------------------------------------------------
# Scenarios 1-3 (and the INFO-logging variant of 2): one stand-in, the service at the bench level and at INFO.
def floors_and_service_cost(bench: Bench) -> None:
    """Transport floor, service cost, boto3 floor — interleaved on the same processes, the servers on a core
    of their own."""
    with bench.pinned():
        _floors_and_service_cost(bench)


def _floors_and_service_cost(bench: Bench) -> None:
    plan = bench.plan
    standin = start_standin(bench.logs, "standin", cpus=bench.load_cpus)
    connections = bench.standin_connection(standin)
    bench.say("scenarios 1-3: starting the stand-in and the service")
    service = bench.service("service", connections)
    info = bench.service("service-info", connections, log_level="INFO") if plan.log_level != "INFO" else None
    floor = bench.service("aio-floor", connections, module="bench.aio_floor")
    previous = bench.previous_service(connections)
    floor1 = ScenarioResult("1-transport-floor", "Transport floor: Health/Check", "req/s")
    cost = ScenarioResult(
        "2-service-cost", f"Service cost: GenerateOtp, stand-in, log {plan.log_level}", "req/s"
    )
    floor3 = ScenarioResult("3-boto3-floor", "boto3 floor: InitiateAuth, same stand-in, threads", "req/s")
    cost_info = ScenarioResult("2i-service-cost-info", "Service cost at OTP_STEP_LOG_LEVEL=INFO", "req/s")
    floor2 = ScenarioResult(
        "2f-aio-floor", "Stack floor: bare grpc.aio handler, one aiobotocore InitiateAuth", "req/s"
    )
    cost_previous = ScenarioResult(
        "2s-previous-sync-service", f"Service cost, the sync service at {PREVIOUS_SYNC_SERVICE[:7]}", "req/s"
    )
    processes = [
        p
        for p in (
            info.process if info else None,
            previous.process if previous else None,
            floor.process,
            service.process,
            standin.process,
        )
        if p
    ]
    with bench.running(*processes):
        watched = {"service": service.process, "stand-in": standin.process}
        health = GhzLoad(ghz.HEALTH_CHECK, plan.concurrency, seconds=plan.seconds, data={})
        # Warm-up: connection set-up, first-call paths, boto3 pools — not measured.
        bench.ghz(service, dataclasses.replace(health, seconds=plan.warmup_seconds), watched)
        bench.ghz(service, bench.generate_load(plan.warmup_seconds), watched)
        if info:
            bench.ghz(info, bench.generate_load(plan.warmup_seconds), {"service": info.process})
        bench.ghz(floor, bench.generate_load(plan.warmup_seconds), {"service": floor.process})
        if previous:
            bench.ghz(previous, bench.generate_load(plan.warmup_seconds), {"service": previous.process})
        secret = bench.work / "standin" / "standin.secret"
        for rep in range(plan.repetitions):
            bench.say(f"scenarios 1-3: repetition {rep + 1}/{plan.repetitions}")
            floor1.runs.append(bench.ghz(service, health, watched))
            cost.runs.append(bench.ghz(service, bench.generate_load(plan.seconds), watched))
            floor3.runs.append(boto_floor(bench, standin, secret))
            if info:
                watched_info = {"service": info.process, "stand-in": standin.process}
                cost_info.runs.append(bench.ghz(info, bench.generate_load(plan.seconds), watched_info))
            watched_floor = {"service": floor.process, "stand-in": standin.process}
            floor2.runs.append(bench.ghz(floor, bench.generate_load(plan.seconds), watched_floor))
            if previous:
                watched_previous = {"service": previous.process, "stand-in": standin.process}
                cost_previous.runs.append(
                    bench.ghz(previous, bench.generate_load(plan.seconds), watched_previous)
                )
        # Added latency: the service and the floor at the same fixed rate, half of what the service sustains,
        # where queueing is not what the percentiles measure.
        rate = max(10, int(cost.median("rps") / 2))
        half_service = ScenarioResult("h-half-rate-service", "Service at half its saturating rate", "req/s")
        half_floor = ScenarioResult("h-half-rate-floor", "Stack floor at the same rate", "req/s")
        for scenario in (half_service, half_floor):
            scenario.extra["rate"] = rate
        for rep in range(plan.repetitions):
            bench.say(f"half-rate latency: repetition {rep + 1}/{plan.repetitions} at {rate} req/s")
            fixed = dataclasses.replace(bench.generate_load(plan.seconds), rate=rate)
            half_service.runs.append(bench.ghz(service, fixed, watched))
            half_floor.runs.append(
                bench.ghz(floor, fixed, {"service": floor.process, "stand-in": standin.process})
            )
        # The service's own cost: its CPU per step against the floor's, both at once on the servers' core.
        bench.cpu_per_step_at_fixed_rate(
            "service against the floor", ((floor, floor2), (service, cost)), plan.repetitions
        )
    cost.step_errors = bench.step_errors(service)
    if info:
        cost_info.step_errors = bench.step_errors(info)
    floor2.step_errors = bench.step_errors(floor)
    bench.results += (
        [floor1, cost, floor3] + ([cost_info] if info else []) + [floor2, half_service, half_floor]
    )
    if previous:
        cost_previous.step_errors = bench.step_errors(previous)
        bench.results.append(cost_previous)


def boto_floor(bench: Bench, standin: Standin, secret: Path) -> LoadResult:
    """Scenario 3: the same InitiateAuth from boto3 threads, no gRPC."""
    plan = bench.plan
    report = bench.boto_load(
        [
            "initiate",
            "--endpoint",
            standin.url,
            "--client-id",
            STANDIN_APP.client_id,
            "--secret-file",
            str(secret),
            "--threads",
            str(plan.concurrency),
            "--max-calls",
            str(plan.max_requests),
            "--max-seconds",
            str(plan.seconds),
            "--warmup-calls",
            str(plan.concurrency * 4),
        ],
        {"stand-in": standin.process},
        timeout=plan.seconds + 120,
    )
    return boto_result(report, report["phases"][-1:], {"stand-in": standin.process}, "boto3 loop")


def boto_result(
    report: Mapping[str, Any],
    phases: Sequence[Mapping[str, Any]],
    watched: Mapping[str, ManagedProcess],
    generator: str,
) -> LoadResult:
    """A LoadResult from boto_load phases (several phases: one journey = one call of each)."""
    seconds = sum(float(p["seconds"]) for p in phases)
    ok = min(int(p["ok"]) for p in phases)
    errors: dict[str, int] = {}
    for phase in phases:
        for kind, count in phase["errors"].items():
            errors[kind] = errors.get(kind, 0) + int(count)
    cpu = sum(float(p["cpu_seconds"]) for p in phases)
    # Watched processes are sampled around the whole child (start-up and warm-up included): an upper bound.
    wall = float(report["wall_seconds"])
    result = LoadResult(
        requests=max(int(p["calls"]) for p in phases),
        ok=ok,
        errors=errors,
        seconds=seconds,
        rps=ok / seconds if seconds else 0.0,
        p50_ms=max(float(p["p50_ms"]) for p in phases),
        p95_ms=max(float(p["p95_ms"]) for p in phases),
        p99_ms=max(float(p["p99_ms"]) for p in phases),
        generator_cpu_seconds=cpu,
        extra={"phases": [dict(p) for p in phases]},
    )
    result.cpu_cores = {name: round(float(report["watched_cpu_seconds"][name]) / wall, 3) for name in watched}
    result.cpu_cores[generator] = round(cpu / seconds, 3) if seconds else 0.0
    return result
