"""Scaling: one process against `OTP_STEP_PROCESSES=2`, both on a Redis store."""

from __future__ import annotations

import dataclasses
import shutil

from otp_step_service.adapters.sealing import SessionSealer

from bench.processes import ManagedProcess, free_port
from bench.scenarios.core import Bench, ScenarioResult
from bench.stack import (
    start_standin,
    tcp_open,
)


# ---------------------------------------------------------------------------------------------------------
# Scaling: the fix for a GIL-bound process is more processes. One process against OTP_STEP_PROCESSES=2 (Redis
# challenge store), ghz spreading its requests over 4 connections for both (the kernel balances connections).
def scaling(bench: Bench) -> None:
    """Scenario 2's load on one process and on two."""
    redis_binary = shutil.which("redis-server")
    if not redis_binary:
        bench.say("scaling: skipped, no redis-server (`make tools` installs it)")
        return
    plan = bench.plan
    port = free_port()
    redis = ManagedProcess.start(
        "redis",
        [redis_binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        bench.logs / "redis.log",
    )
    redis.wait_ready(lambda: tcp_open(port), timeout=30)
    standin = start_standin(bench.logs, "standin-scale")
    connections = bench.standin_connection(standin, name="standin-scale")
    keys = bench.work / "challenge.keys"
    keys.write_text(SessionSealer.new_key_line("bench") + "\n")
    store = {
        "OTP_STEP_CHALLENGE_STORE": f"redis://127.0.0.1:{port}/0",
        "OTP_STEP_CHALLENGE_KEYS_FILE": str(keys),
    }
    one = bench.service("service-1p", connections, env=store)
    two = bench.service("service-2p", connections, env={**store, "OTP_STEP_PROCESSES": "2"})
    single = ScenarioResult("s1-one-process", "Scaling: GenerateOtp, 1 process, 4 connections", "req/s")
    double = ScenarioResult(
        "s2-two-processes", "Scaling: GenerateOtp, OTP_STEP_PROCESSES=2, 4 connections", "req/s"
    )
    double.notes.append("step outcomes of forked servers are not counted: errors here are gRPC statuses only")
    with bench.running(redis, standin.process, one.process, two.process):
        for service in (one, two):
            watched = {"service": service.process, "stand-in": standin.process}
            warm = dataclasses.replace(bench.generate_load(plan.warmup_seconds), connections=4)
            bench.ghz(service, warm, watched)
        for rep in range(plan.repetitions):
            bench.say(f"scaling: repetition {rep + 1}/{plan.repetitions}")
            for service, result in ((one, single), (two, double)):
                watched = {"service": service.process, "stand-in": standin.process}
                load = dataclasses.replace(bench.generate_load(plan.seconds), connections=4)
                result.runs.append(bench.ghz(service, load, watched))
    single.step_errors = bench.step_errors(one)
    bench.results += [single, double]
