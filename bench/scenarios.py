"""The scenarios. Each starts what it needs, runs interleaved repetitions, and records CPU per process.

Ratios are what the targets judge, so the loads compared by a target run one after the other inside each
repetition (A, B, A, B, ...), on the same processes, and each figure is the median over repetitions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otp_step_service.adapters.sealing import SessionSealer

from bench import ghz
from bench.boto_load import clear_outbox, outbox_codes
from bench.ghz import GhzLoad, LoadResult
from bench.processes import ManagedProcess, free_port, rss_bytes, run_to_completion
from bench.stack import (
    REGION,
    ROOT,
    STANDIN_APP,
    CognitoApp,
    ServiceProcess,
    Standin,
    child_env,
    start_emulator,
    start_jaeger,
    start_service,
    start_standin,
    tcp_open,
    write_connections,
)

LITTLE_DELAY_MS = 100.0
# The last commit of the synchronous (thread-per-step) service, measured beside the async one in one run.
PREVIOUS_SYNC_SERVICE = "d26499f0e61c"


def previous_checkout(logs: Path) -> Path:
    """A worktree of PREVIOUS_SYNC_SERVICE with its venv (`make venv` there), made once and kept in var/."""
    folder = ROOT / "var" / "bench-previous"
    if not (folder / ".venv" / "bin" / "python").exists():
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=True)
        subprocess.run(
            [
                "git",
                "-C",
                str(ROOT),
                "worktree",
                "add",
                "--force",
                "--detach",
                str(folder),
                PREVIOUS_SYNC_SERVICE,
            ],
            check=True,
            capture_output=True,
        )
        with (logs / "previous-setup.log").open("wb") as log:
            subprocess.run(["make", "venv"], cwd=folder, check=True, stdout=log, stderr=subprocess.STDOUT)
    return folder


@dataclass(frozen=True, slots=True)
class Plan:
    """How long and how hard a run loads things."""

    quick: bool
    repetitions: int
    seconds: float  # per measured load
    warmup_seconds: float
    concurrency: int
    journeys: int  # per phase of scenario 5 (each one a distinct emulator user)
    memory_seconds: float
    memory_early_seconds: float
    memory_challenge_seconds: int  # challenge lifetime in the memory run: steady state well before "early"
    log_level: str
    tracing: bool
    max_requests: int = 1_000_000  # count bound of the boto3 loop (time ends it first)

    @classmethod
    def full(cls, tracing: bool = False, log_level: str = "WARNING") -> Plan:
        """The default run: a few minutes."""
        return cls(False, 3, 4.0, 1.5, 50, 400, 120.0, 20.0, 8, log_level, tracing)

    @classmethod
    def smoke(cls, tracing: bool = False, log_level: str = "WARNING") -> Plan:
        """`--quick`: every scenario once, briefly; the figures mean nothing."""
        return cls(True, 1, 1.0, 0.3, 20, 30, 4.0, 1.0, 2, log_level, tracing)


@dataclass
class ScenarioResult:
    """One scenario (or variant): its runs, in repetition order."""

    key: str
    title: str
    unit: str
    runs: list[LoadResult] = field(default_factory=list)
    # Step outcomes that were not success, counted by the service for this scenario's steps.
    step_errors: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def median(self, attribute: str) -> float:
        """Median of a LoadResult attribute over the runs."""
        values = sorted(float(getattr(run, attribute)) for run in self.runs)
        if not values:
            return 0.0
        middle = len(values) // 2
        return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2

    def median_cpu(self) -> dict[str, float]:
        """Median CPU cores per process."""
        names = sorted({name for run in self.runs for name in run.cpu_cores})
        medians = {}
        for name in names:
            values = sorted(run.cpu_cores.get(name, 0.0) for run in self.runs)
            medians[name] = values[len(values) // 2]
        return medians

    @property
    def errors(self) -> dict[str, int]:
        """Every error: per run, plus failed step outcomes."""
        total: dict[str, int] = dict(self.step_errors)
        for run in self.runs:
            for kind, count in run.errors.items():
                total[kind] = total.get(kind, 0) + count
        return total


class Bench:
    """One harness run: where things go, what is running, and the scenarios' results."""

    def __init__(self, plan: Plan, folder: Path) -> None:
        self.plan = plan
        self.folder = folder
        self.logs = folder / "logs"
        self.work = folder / "work"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.results: list[ScenarioResult] = []
        self.protoset = self.work / "stepexecutor.protoset"
        # OK RPCs sent to each service process, by call: each must match a successful step outcome.
        self.ok_rpcs: Counter[tuple[str, str]] = Counter()
        self.started = time.monotonic()
        self._stage = ""

    def begin(self, number: int, total: int, name: str) -> None:
        """Scenario group `number` of `total` starts: every progress line says so from now on."""
        self._stage = f"{number}/{total} {name}"
        self.say(f"scenario group {number} of {total}: {name}")

    def say(self, message: str) -> None:
        """Progress on stderr (the summary goes to stdout), with the group and the time since the start: a
        full run takes minutes, and someone watching wants to know how far it is."""
        elapsed = int(time.monotonic() - self.started)
        where = f" {self._stage}" if self._stage else ""
        print(f"[bench{where} +{elapsed // 60}m{elapsed % 60:02d}s] {message}", file=sys.stderr, flush=True)

    # -- plumbing --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def running(self, *processes: ManagedProcess) -> Iterator[None]:
        """Stop these processes when the block ends, whatever happens."""
        try:
            yield
        finally:
            for process in reversed(processes):
                process.stop()

    def ensure_protoset(self, address: str) -> None:
        """Fetch the descriptors from the service's reflection once."""
        if not self.protoset.exists():
            self.protoset.write_bytes(ghz.protoset_from_reflection(address))

    def ghz(
        self, service: ServiceProcess, load: GhzLoad, watched: Mapping[str, ManagedProcess]
    ) -> LoadResult:
        """Run ghz against the service; CPU of each watched process over the run."""
        result = self.measured(watched, lambda: ghz.run_ghz(load, service.address, self.protoset, self.work))
        self.ok_rpcs[(service.process.name, load.call)] += result.ok
        return result

    def step_errors(self, service: ServiceProcess) -> dict[str, int]:
        """Failed step outcomes of a stopped service, and OK RPCs without a successful step."""
        outcomes = service.outcomes()
        if not outcomes and not any(n == service.process.name for n, _ in self.ok_rpcs):
            return {}
        if not outcomes:
            return {"step:outcomes-unavailable": 1}
        errors = {f"step:{k}": v for k, v in outcomes.items() if ":success" not in k}
        for call, step_type in (
            (ghz.GENERATE, "cognito_otp_generate"),
            (ghz.VALIDATE, "cognito_otp_validate"),
        ):
            counted = sum(v for k, v in outcomes.items() if k.startswith(step_type + ":"))
            missing = self.ok_rpcs[(service.process.name, call)] - counted
            if missing:
                errors[f"step:{step_type}:unaccounted"] = missing
        return errors

    @staticmethod
    def measured(watched: Mapping[str, ManagedProcess], run: Callable[[], LoadResult]) -> LoadResult:
        """Run `run`, then set the CPU cores each watched process and the load generator used."""
        before = {name: process.cpu_seconds() for name, process in watched.items()}
        started = time.perf_counter()
        result = run()
        wall = time.perf_counter() - started
        result.cpu_cores = {
            name: round((process.cpu_seconds() - before[name]) / wall, 3) for name, process in watched.items()
        }
        result.cpu_cores["ghz"] = round(result.generator_cpu_seconds / wall, 3)
        return result

    def boto_load(
        self, arguments: Sequence[str], watched: Mapping[str, ManagedProcess], timeout: float
    ) -> dict[str, Any]:
        """Run `python -m bench.boto_load` with CPU of the watched processes sampled around its phases."""
        before = {name: process.cpu_seconds() for name, process in watched.items()}
        started = time.perf_counter()
        finished = run_to_completion(
            [sys.executable, "-m", "bench.boto_load", *arguments], timeout=timeout, env=child_env()
        )
        wall = time.perf_counter() - started
        if finished.returncode != 0:
            raise RuntimeError(f"boto_load failed: {finished.stderr.decode(errors='replace')[-2000:]}")
        report: dict[str, Any] = json.loads(finished.stdout)
        report["watched_cpu_seconds"] = {n: p.cpu_seconds() - before[n] for n, p in watched.items()}
        report["wall_seconds"] = wall
        return report

    def service(
        self,
        name: str,
        connections: Path,
        log_level: str | None = None,
        env: Mapping[str, str] | None = None,
        module: str = "bench.counted_service",
    ) -> ServiceProcess:
        """Start a service process and make sure the protoset exists."""
        service = start_service(self.logs, name, connections, log_level or self.plan.log_level, env, module)
        if module == "bench.counted_service":
            self.ensure_protoset(service.address)
        return service

    def previous_service(self, connections: Path) -> ServiceProcess | None:
        """The sync service of PREVIOUS_SYNC_SERVICE, from a git worktree with its own venv (full runs only:
        its first set-up takes a minute)."""
        if self.plan.quick:
            return None
        checkout = previous_checkout(self.logs)
        return start_service(
            self.logs,
            "previous-sync",
            connections,
            self.plan.log_level,
            {"OTP_STEP_WORKERS": "64"},
            python=str(checkout / ".venv" / "bin" / "python"),
            cwd=checkout,
        )

    def standin_connection(self, standin: Standin, name: str = "standin", **options: Any) -> Path:
        """A connections file pointing at the stand-in."""
        app = dataclasses.replace(STANDIN_APP, endpoint_url=standin.url)
        return write_connections(self.work / name, "standin", app, options)

    def generate_load(self, seconds: float, concurrency: int | None = None) -> GhzLoad:
        """GenerateOtp on the stand-in connection: a new journey run and identifier per request."""
        return GhzLoad(
            call=ghz.GENERATE,
            concurrency=concurrency or self.plan.concurrency,
            seconds=seconds,
            data=GENERATE_TEMPLATE,
        )


# Each request its own journey run and identifier, so no two requests share a challenge (or a Cognito user's
# rate limit, were this a real pool).
GENERATE_TEMPLATE: Mapping[str, Any] = {
    "journey": {"journey_id": "bench", "journey_run_id": "{{newUUID}}", "step_id": "send-code"},
    "step": {
        "connection": "standin",
        "user_identifier": "u{{.RequestNumber}}-{{randomString 6}}@example.com",
        "otp_channel": "OTP_CHANNEL_EMAIL",
    },
}


# ---------------------------------------------------------------------------------------------------------
# Scenarios 1-3 (and the INFO-logging variant of 2): one stand-in, the service at the bench level and at INFO.
def floors_and_service_cost(bench: Bench) -> None:
    """Transport floor, service cost, boto3 floor — interleaved on the same processes."""
    plan = bench.plan
    standin = start_standin(bench.logs, "standin")
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


# ---------------------------------------------------------------------------------------------------------
# Scenario 5: whole journeys against the emulator, beside the same calls made directly with boto3.
@dataclass(frozen=True, slots=True)
class EmulatorPool:
    """The bench pool in the emulator and its users' email addresses."""

    app: CognitoApp
    users: tuple[str, ...]


def seed_pool(endpoint: str, users: int) -> EmulatorPool:
    """A pool for EMAIL_OTP sign-in (alias email), an app client with a secret, `users` verified users."""
    from bench.boto_load import make_client

    client = make_client(endpoint, 8)
    pool = client.create_user_pool(
        PoolName="bench",
        UserPoolTier="ESSENTIALS",
        Policies={"SignInPolicy": {"AllowedFirstAuthFactors": ["EMAIL_OTP"]}},
        AliasAttributes=["email"],
        MfaConfiguration="OFF",
    )["UserPool"]
    app = client.create_user_pool_client(
        UserPoolId=pool["Id"],
        ClientName="bench",
        GenerateSecret=True,
        ExplicitAuthFlows=["ALLOW_USER_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        PreventUserExistenceErrors="ENABLED",
        AuthSessionValidity=3,
    )["UserPoolClient"]
    emails = tuple(f"bench{i:05d}@example.com" for i in range(users))

    def create(email: str) -> None:
        client.admin_create_user(
            UserPoolId=pool["Id"],
            Username=email.split("@")[0],
            MessageAction="SUPPRESS",
            UserAttributes=[
                {"Name": "email", "Value": email},
                {"Name": "email_verified", "Value": "true"},
                {"Name": "given_name", "Value": "Bench"},
            ],
        )

    with ThreadPoolExecutor(8) as pool_threads:
        list(pool_threads.map(create, emails))
    return EmulatorPool(CognitoApp(endpoint, pool["Id"], app["ClientId"], app["ClientSecret"]), emails)


def journeys(bench: Bench) -> None:
    """Scenario 5: GenerateOtp + ValidateOtp through the service vs InitiateAuth + Respond directly."""
    plan = bench.plan
    emulator, url = start_emulator(bench.logs)
    service: ServiceProcess | None = None
    try:
        bench.say(f"scenario 5: seeding {plan.journeys} users in the emulator")
        pool = seed_pool(url, plan.journeys)
        connections = write_connections(bench.work / "emulator", "emulator", pool.app)
        service = bench.service("service-emulator", connections)
        users_file = bench.work / "emulator" / "users.json"
        users_file.write_text(json.dumps(list(pool.users)))
        through = ScenarioResult(
            "5-journeys", "End to end: Generate + Validate via the service, emulator", "journeys/s"
        )
        direct = ScenarioResult("5d-direct", "End to end: InitiateAuth + Respond, boto3 direct", "journeys/s")
        direct_get_user = ScenarioResult(
            "5g-direct-getuser", "Direct + GetUser (the Cognito calls Validate makes)", "journeys/s"
        )
        watched = {"service": service.process, "emulator": emulator}
        journey_run(bench, service, pool, watched, warm=True)
        for rep in range(plan.repetitions):
            bench.say(f"scenario 5: repetition {rep + 1}/{plan.repetitions}")
            through.runs.append(journey_run(bench, service, pool, watched))
            direct.runs.append(direct_run(bench, url, pool, users_file, emulator, get_user=False))
            direct_get_user.runs.append(direct_run(bench, url, pool, users_file, emulator, get_user=True))
    finally:
        if service is not None:
            service.process.stop()
        emulator.stop()
    if service is not None:
        through.step_errors = bench.step_errors(service)
    bench.results += [through, direct, direct_get_user]


def journey_run(
    bench: Bench,
    service: ServiceProcess,
    pool: EmulatorPool,
    watched: Mapping[str, ManagedProcess],
    warm: bool = False,
) -> LoadResult:
    """One repetition through the service: ghz Generate (a data file), codes from the outbox, ghz Validate."""
    plan = bench.plan
    users = pool.users[: max(10, plan.journeys // 10)] if warm else pool.users
    runs = [str(uuid.uuid4()) for _ in users]
    journey = {"journey_id": "bench-e2e", "step_id": "send-code"}
    generate = [
        {
            "journey": {**journey, "journey_run_id": run},
            "step": {"connection": "emulator", "user_identifier": email, "otp_channel": "OTP_CHANNEL_EMAIL"},
        }
        for run, email in zip(runs, users, strict=True)
    ]
    folder = bench.work / "emulator"
    (folder / "generate.json").write_text(json.dumps(generate))
    clear_outbox(pool.app.endpoint_url)
    bound = plan.seconds * 10 + 30  # count-bounded; the time bound only guards against a stuck run
    first = bench.ghz(
        service,
        GhzLoad(
            ghz.GENERATE,
            plan.concurrency,
            total=len(users),
            max_seconds=bound,
            data_file=folder / "generate.json",
        ),
        watched,
    )
    codes = outbox_codes(pool.app.endpoint_url)
    validate = [
        {
            "journey": {**journey, "journey_run_id": run, "step_id": "check-code"},
            "step": {"connection": "emulator", "user_identifier": email},
            "otp_code": codes.get(email, "00000000"),
        }
        for run, email in zip(runs, users, strict=True)
    ]
    (folder / "validate.json").write_text(json.dumps(validate))
    second = bench.ghz(
        service,
        GhzLoad(
            ghz.VALIDATE,
            plan.concurrency,
            total=len(users),
            max_seconds=bound,
            data_file=folder / "validate.json",
        ),
        watched,
    )
    return combine_phases(first, second)


def combine_phases(first: LoadResult, second: LoadResult) -> LoadResult:
    """Journeys per second over two phases run one after the other; CPU weighted by each phase's time."""
    seconds = first.seconds + second.seconds
    errors = dict(first.errors)
    for kind, count in second.errors.items():
        errors[kind] = errors.get(kind, 0) + count
    journeys_ok = min(first.ok, second.ok)
    combined = LoadResult(
        requests=max(first.requests, second.requests),
        ok=journeys_ok,
        errors=errors,
        seconds=seconds,
        rps=journeys_ok / seconds if seconds else 0.0,
        p50_ms=first.p50_ms + second.p50_ms,
        p95_ms=first.p95_ms + second.p95_ms,
        p99_ms=first.p99_ms + second.p99_ms,
        generator_cpu_seconds=first.generator_cpu_seconds + second.generator_cpu_seconds,
        extra={
            "generate": {
                "rps": first.rps,
                "p50_ms": first.p50_ms,
                "p99_ms": first.p99_ms,
                "cpu": first.cpu_cores,
            },
            "validate": {
                "rps": second.rps,
                "p50_ms": second.p50_ms,
                "p99_ms": second.p99_ms,
                "cpu": second.cpu_cores,
            },
            "latency_note": "journey latency = Generate + Validate percentiles added",
        },
    )
    names = set(first.cpu_cores) | set(second.cpu_cores)
    combined.cpu_cores = (
        {
            n: round(
                (first.cpu_cores.get(n, 0) * first.seconds + second.cpu_cores.get(n, 0) * second.seconds)
                / seconds,
                3,
            )
            for n in names
        }
        if seconds
        else {}
    )
    return combined


def direct_run(
    bench: Bench, url: str, pool: EmulatorPool, users_file: Path, emulator: ManagedProcess, get_user: bool
) -> LoadResult:
    """One repetition of the same sign-ins made directly with boto3 (codes from the outbox, untimed)."""
    plan = bench.plan
    secret = bench.work / "emulator" / "emulator.secret"
    arguments = [
        "sign-in",
        "--endpoint",
        url,
        "--client-id",
        pool.app.client_id,
        "--secret-file",
        str(secret),
        "--threads",
        str(plan.concurrency),
        "--users-file",
        str(users_file),
        "--max-seconds",
        str(plan.seconds * 10 + 30),
    ]
    if get_user:
        arguments.append("--get-user")
    report = bench.boto_load(arguments, {"emulator": emulator}, timeout=plan.seconds * 20 + 120)
    result = boto_result(report, report["phases"], {"emulator": emulator}, "boto3 loop")
    result.extra["observed"] = report.get("observed", {})
    return result


# ---------------------------------------------------------------------------------------------------------
# Memory: RSS of the service over a sustained GenerateOtp load.
def memory(bench: Bench) -> None:
    """Sample the service's RSS every second under sustained load; compare the end with the early value."""
    plan = bench.plan
    standin = start_standin(bench.logs, "standin-memory")
    # Challenges live `memory_challenge_seconds` here, so the challenge store reaches its steady size (up to
    # twice rate x lifetime, with the expiry grace) before the early sample: what grows after that is not the
    # store.
    connections = bench.standin_connection(
        standin,
        name="standin-memory",
        session_validity_seconds=plan.memory_challenge_seconds,
        # Per-identifier send counters live a window; every request here is a new identifier, so the window
        # is shortened like the challenges' lifetime, for the same reason (see the comment above).
        send_window_seconds=max(10, plan.memory_challenge_seconds),
    )
    service = bench.service("service-memory", connections)
    scenario = ScenarioResult(
        "m-memory",
        f"Memory: sustained GenerateOtp for {plan.memory_seconds:g} s (challenges live {plan.memory_challenge_seconds} s)",
        "req/s",
    )
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(OSError):
                samples.append((round(time.monotonic() - started, 2), rss_bytes(service.process.pid)))
            stop.wait(1.0 if not plan.quick else 0.25)

    with bench.running(standin.process, service.process):
        sampler = threading.Thread(target=sample, daemon=True)
        bench.say(f"memory: {plan.memory_seconds:g} s of sustained load")
        sampler.start()
        result = bench.ghz(
            service,
            bench.generate_load(plan.memory_seconds),
            {"service": service.process, "stand-in": standin.process},
        )
        stop.set()
        sampler.join()
    scenario.runs.append(result)
    scenario.step_errors = bench.step_errors(service)
    early = next(
        (rss for t, rss in samples if t >= plan.memory_early_seconds), samples[0][1] if samples else 0
    )
    end = samples[-1][1] if samples else 0
    first_second = next((rss for t, rss in samples if t >= 1.0), early)
    at_lifetime = next((rss for t, rss in samples if t >= plan.memory_challenge_seconds), early)
    created = result.rps * max(plan.memory_challenge_seconds - 1.0, 1.0)
    per_challenge = max(at_lifetime - first_second, 0) / created if created else 0.0
    scenario.extra = {
        "rss_early_bytes": early,
        "rss_end_bytes": end,
        "rss_ratio": end / early if early else 0.0,
        "samples": samples,
        "approx_bytes_per_live_challenge": round(per_challenge),
        "store_at_default_lifetime_bytes": round(per_challenge * result.rps * 360),
    }
    scenario.notes.append(
        "The in-memory challenge store holds one entry per Generate until it expires, then as long again (so "
        "Validate can still say CHALLENGE_EXPIRED): up to 2 x rate x lifetime entries. "
        f"At {result.rps:.0f} req/s and the default 3-minute lifetime that is about "
        f"{result.rps * 360:,.0f} challenges, ~{per_challenge * result.rps * 360 / 2**20:,.0f} MiB "
        f"(~{per_challenge / 1024:,.1f} KiB each, estimated from the first {plan.memory_challenge_seconds} s)."
    )
    bench.results.append(scenario)


# ---------------------------------------------------------------------------------------------------------
# Telemetry overhead: scenario 2 with tracing off and on (OTLP to a local Jaeger), interleaved.
def tracing_overhead(bench: Bench, jaeger_binary: str) -> None:
    """Throughput with tracing off and on (default sampler; 10% sampled; nothing sampled), same load.

    This group runs more repetitions than the others: run-to-run noise on this machine is ±10%.
    """
    plan = bench.plan
    repetitions = plan.repetitions if plan.quick else max(plan.repetitions, 5)
    jaeger, otlp, ui = start_jaeger(bench.logs, jaeger_binary)
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
        # The same services at a fixed rate below saturation: CPU per step, the cost itself. Throughput at
        # saturation also moves with scheduling on two shared cores; this moved ±2% between two identical
        # services where throughput moved ±10%.
        rate = TRACING_FIXED_RATE if not plan.quick else 20
        for rep in range(repetitions):
            bench.say(f"tracing at {rate} req/s: repetition {rep + 1}/{repetitions}")
            for service, scenario in pairs:
                load = dataclasses.replace(bench.generate_load(plan.seconds), rate=rate)
                run = bench.ghz(service, load, {"service": service.process})
                cpu_ms = run.cpu_cores["service"] / run.rps * 1000 if run.rps else 0.0
                scenario.extra.setdefault("cpu_ms_per_step_at_fixed_rate", []).append(round(cpu_ms, 3))
                scenario.extra["fixed_rate"] = rate
        on_result.extra["jaeger_ui"] = ui
        on_result.extra["traces_seen"] = jaeger_trace_count(ui, "otp-step-service-service-tracing-on")
    for service, scenario in pairs:
        scenario.step_errors = bench.step_errors(service)
    bench.results += [result for _, result in pairs]


TRACING_FIXED_RATE = 200  # req/s: below every tracing variant's saturation on the reference machine


def jaeger_trace_count(ui: str, service_name: str) -> int:
    """Traces Jaeger holds for the service (proof the exporter reached it); -1 if the query failed."""
    url = f"{ui}/api/traces?service={service_name}&limit=20&lookback=1h"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - loopback
            return len(json.load(answer).get("data") or [])
    except (OSError, ValueError):
        return -1


def machine() -> dict[str, Any]:
    """Where the figures came from."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "platform": sys.platform,
        "region": REGION,
    }


def metrics_overhead(bench: Bench) -> None:
    """Throughput with metrics off and on (OTP_STEP_METRICS_LISTEN, scraped every second as Prometheus
    would), same load, interleaved; and CPU per step at a fixed rate below saturation."""
    plan = bench.plan
    repetitions = plan.repetitions if plan.quick else max(plan.repetitions, 5)
    standin = start_standin(bench.logs, "standin-metrics")
    connections = bench.standin_connection(standin, name="standin-metrics")
    scrape = f"127.0.0.1:{free_port()}"
    off = bench.service("service-metrics-off", connections)
    on = bench.service("service-metrics-on", connections, env={"OTP_STEP_METRICS_LISTEN": scrape})
    off_result = ScenarioResult("x-metrics-off", "Service cost, metrics off", "req/s")
    on_result = ScenarioResult("x-metrics-on", "Service cost, metrics on (scraped every second)", "req/s")
    pairs = ((off, off_result), (on, on_result))
    scraping = threading.Event()
    scrapes: list[int] = []

    def scraper() -> None:
        while not scraping.wait(1.0):
            try:
                with urllib.request.urlopen(f"http://{scrape}/metrics", timeout=2) as answer:
                    scrapes.append(len(answer.read()))
            except OSError:
                scrapes.append(-1)

    thread = threading.Thread(target=scraper, name="metrics-scraper", daemon=True)
    with bench.running(standin.process, *(service.process for service, _ in pairs)):
        thread.start()
        try:
            for service, _ in pairs:
                bench.ghz(service, bench.generate_load(plan.warmup_seconds), {"service": service.process})
            for rep in range(repetitions):
                bench.say(f"metrics: repetition {rep + 1}/{repetitions}")
                for service, scenario in pairs:
                    watched = {"service": service.process, "stand-in": standin.process}
                    scenario.runs.append(bench.ghz(service, bench.generate_load(plan.seconds), watched))
            rate = TRACING_FIXED_RATE if not plan.quick else 20
            for rep in range(repetitions):
                bench.say(f"metrics at {rate} req/s: repetition {rep + 1}/{repetitions}")
                for service, scenario in pairs:
                    load = dataclasses.replace(bench.generate_load(plan.seconds), rate=rate)
                    run = bench.ghz(service, load, {"service": service.process})
                    cpu_ms = run.cpu_cores["service"] / run.rps * 1000 if run.rps else 0.0
                    scenario.extra.setdefault("cpu_ms_per_step_at_fixed_rate", []).append(round(cpu_ms, 3))
                    scenario.extra["fixed_rate"] = rate
        finally:
            scraping.set()
            thread.join(timeout=5)
    on_result.extra["scrapes"] = len(scrapes)
    on_result.extra["failed_scrapes"] = sum(1 for size in scrapes if size < 0)
    on_result.extra["scrape_bytes"] = max(scrapes, default=0)
    for service, scenario in pairs:
        scenario.step_errors = bench.step_errors(service)
    bench.results += [result for _, result in pairs]
