"""The cost of durable counters: `OTP_STEP_STORE_MIN_REPLICAS` 0 (no WAIT) against 1 (each script that adds to a
security counter is followed by WAIT for the replica), side by side in one run.

Two services, one without WAIT and one with, each on a Redis primary with one replica of its own, on loopback.
Both are driven at once, at the same fixed rate below saturation, by a ghz each: Generate steps (two scripts
WAITed: the send's reservation and its settlement), then Validate steps with a wrong code on the challenges
just made (the attempt is counted, and WAITed, before Cognito judges it; the stand-in answers every code
CodeMismatchException). At once, not one after the other: on a machine shared with other work a load that
starts or stops moves a run's latency more than WAIT does, and at once both configurations see it. Per step:
latency p50 / p99 (ghz), CPU of the service and of its Redis pair (/proc), the primary's count of WAIT
commands, and the steps that failed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
from otp_step_service.adapters.sealing import SessionSealer

from bench import ghz
from bench.ghz import GhzLoad, LoadResult
from bench.processes import ManagedProcess, free_port, wait_until
from bench.scenarios.core import FIXED_RATE, Bench, ScenarioResult
from bench.stack import ServiceProcess, start_standin, tcp_open

# The outcome every Validate of this group should have: the stand-in judges every code wrong.
EXPECTED_VALIDATE = "step:cognito_otp_validate:failure:INVALID_CODE"
REPLICAS = (0, 1)
STEPS = ("generate", "validate")


def key(replicas: int, step: str) -> str:
    """The scenario key of one configuration's step: w0-generate ... w1-validate."""
    return f"w{replicas}-{step}"


def _redis(bench: Bench, name: str, *extra: str) -> tuple[ManagedProcess, int]:
    binary = shutil.which("redis-server")
    assert binary is not None
    port = free_port()
    folder = bench.work / name  # a replica writes the primary's snapshot to disk when it syncs
    folder.mkdir(parents=True, exist_ok=True)
    process = ManagedProcess.start(
        name,
        [
            binary,
            "--dir",
            str(folder),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",
            "0",
            *extra,
        ],
        bench.logs / f"{name}.log",
    )
    process.wait_ready(lambda: tcp_open(port), timeout=30)
    return process, port


def _journeys(prefix: str, step: str) -> Mapping[str, Any]:
    """ghz data: request N is journey run `prefix-N` of its own user, so the Validate run's request N finds the
    challenge the Generate run's request N made."""
    data: dict[str, Any] = {
        "journey": {
            "journey_id": "bench",
            "journey_run_id": f"{prefix}-{{{{.RequestNumber}}}}",
            "step_id": "send-code" if step == "generate" else "check-code",
        },
        "step": {
            "connection": "standin",
            "user_identifier": f"{prefix}-u{{{{.RequestNumber}}}}@example.com",
            "otp_channel": "OTP_CHANNEL_EMAIL",
        },
    }
    if step == "validate":
        data["otp_code"] = "000000"
    return data


@dataclass(frozen=True)
class _Configuration:
    """One side: its service, and its Redis primary (a client of it) and replica."""

    replicas: int  # OTP_STEP_STORE_MIN_REPLICAS
    service: ServiceProcess
    client: redis.Redis
    primary: ManagedProcess
    replica: ManagedProcess

    def waits(self) -> int:
        """WAIT commands the primary has run: the proof that a configuration waits as often as it says."""
        return int(self.client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))


def _redis_pair(bench: Bench, name: str) -> tuple[ManagedProcess, ManagedProcess, redis.Redis, int]:
    """A primary and its replica, synced; a client of the primary, and its port."""
    primary, port = _redis(bench, f"{name}-primary")
    replica, _ = _redis(bench, f"{name}-replica", "--replicaof", "127.0.0.1", str(port))
    client = redis.Redis(port=port)
    wait_until(
        lambda: client.info("replication").get("slave0", {}).get("state") == "online",
        timeout=30,
        what="the replica to sync",
    )
    return primary, replica, client, port


def store_wait(bench: Bench) -> None:
    """Generate and Validate at one rate on a service without WAIT and on one with it, at once."""
    if not shutil.which("redis-server"):
        bench.say("store_wait: skipped, no redis-server (`make tools` installs it)")
        return
    plan = bench.plan
    # Half the fixed rate of the other groups on each side, as both sides run at once: together they stay well
    # below what the machine sustains, so latency is the steps' own and not a queue's. 1,600 steps a run: its
    # p99 is the 16th slowest.
    rate = FIXED_RATE // 2 if not plan.quick else 50
    steps = round(rate * plan.seconds * 4) if not plan.quick else 25
    pairs = {replicas: _redis_pair(bench, f"redis-wait{replicas}") for replicas in REPLICAS}
    redis_processes = [process for pair in pairs.values() for process in pair[:2]]
    with bench.running(*redis_processes):
        keys = bench.work / "store-wait.keys"
        keys.write_text(SessionSealer.new_key_line("bench") + "\n")
        keys.chmod(0o600)
        standin = start_standin(bench.logs, "standin-wait")
        connections = bench.standin_connection(standin, name="standin-wait")
        sides = []
        for replicas, (primary, replica, client, port) in pairs.items():
            service = bench.service(
                f"service-wait{replicas}",
                connections,
                env={
                    "OTP_STEP_CHALLENGE_STORE": f"redis://127.0.0.1:{port}/0",
                    "OTP_STEP_CHALLENGE_KEYS_FILE": str(keys),
                    "OTP_STEP_STORE_MIN_REPLICAS": str(replicas),
                },
            )
            sides.append(_Configuration(replicas, service, client, primary, replica))
        results = {
            (side.replicas, step): ScenarioResult(
                key(side.replicas, step),
                f"WAIT cost: {'GenerateOtp' if step == 'generate' else 'ValidateOtp (wrong code)'} at "
                f"{rate} req/s, OTP_STEP_STORE_MIN_REPLICAS={side.replicas}",
                "req/s",
            )
            for side in sides
            for step in STEPS
        }
        with bench.running(standin.process, *(side.service.process for side in sides)):
            if not plan.quick:  # warm: scripts loaded, pools open
                _side_by_side(bench, sides, "warm", rate, rate)
            for rep in range(plan.repetitions):
                bench.say(f"store_wait: repetition {rep + 1}/{plan.repetitions}, {steps} journeys each side")
                for (replicas, step), run in _side_by_side(bench, sides, f"r{rep}", rate, steps).items():
                    results[(replicas, step)].runs.append(run)
        for side in sides:
            side.client.close()
            errors = bench.step_errors(side.service)
            errors.pop(EXPECTED_VALIDATE, None)
            for step in STEPS:
                results[(side.replicas, step)].step_errors = {
                    kind: count
                    for kind, count in errors.items()
                    if kind.startswith(f"step:cognito_otp_{step}")
                }
                results[(side.replicas, step)].extra["fixed_rate"] = rate
    bench.results += list(results.values())


def _side_by_side(
    bench: Bench, sides: list[_Configuration], prefix: str, rate: int, steps: int
) -> dict[tuple[int, str], LoadResult]:
    """`steps` Generates at `rate` on every side at once, then a Validate of each, at once."""
    runs = {}
    with ThreadPoolExecutor(len(sides)) as pool:
        for step in STEPS:
            started = {
                side.replicas: pool.submit(_load, bench, side, step, f"w{side.replicas}{prefix}", rate, steps)
                for side in sides
            }
            for replicas, future in started.items():
                runs[(replicas, step)] = future.result()
    for (replicas, step), run in runs.items():  # what Bench.ghz counts, for step_errors
        service = next(side.service for side in sides if side.replicas == replicas)
        bench.ok_rpcs[(service.process.name, ghz.GENERATE if step == "generate" else ghz.VALIDATE)] += run.ok
    return runs


def _load(bench: Bench, side: _Configuration, step: str, prefix: str, rate: int, steps: int) -> LoadResult:
    """One side's ghz run, with the CPU of its service and of its Redis pair, and its WAITs, per step."""
    load = GhzLoad(
        call=ghz.GENERATE if step == "generate" else ghz.VALIDATE,
        concurrency=min(bench.plan.concurrency, 20),
        total=steps,
        rate=rate,
        data=_journeys(prefix, step),
    )
    watched = {"service": side.service.process, "redis primary": side.primary, "redis replica": side.replica}
    workdir = bench.work / f"ghz-wait{side.replicas}"  # its own report file: the two sides run at once
    workdir.mkdir(exist_ok=True)
    before = {name: process.cpu_seconds() for name, process in watched.items()}
    waits = side.waits()
    started = time.perf_counter()
    run = ghz.run_ghz(load, side.service.address, bench.protoset, workdir)
    wall = time.perf_counter() - started
    spent = {name: process.cpu_seconds() - before[name] for name, process in watched.items()}
    run.cpu_cores = {name: round(cpu / wall, 3) for name, cpu in spent.items()}
    run.cpu_cores["ghz"] = round(run.generator_cpu_seconds / wall, 3)
    count = max(run.requests, 1)
    run.extra["cpu_ms_per_step"] = {
        "service": round(spent["service"] / count * 1000, 3),
        "redis": round((spent["redis primary"] + spent["redis replica"]) / count * 1000, 3),
    }
    # Read after the run: one more INFO call, itself not a WAIT.
    run.extra["waits_per_step"] = round((side.waits() - waits) / count, 3)
    return run
