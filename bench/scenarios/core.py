"""What every scenario shares: the plan (durations, repetitions), results, and the `Bench` that runs loads.

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
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import ghz
from bench.ghz import GhzLoad, LoadResult
from bench.processes import Cores, ManagedProcess, run_to_completion
from bench.stack import (
    REGION,
    ROOT,
    STANDIN_APP,
    ServiceProcess,
    Standin,
    child_env,
    start_service,
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
        # Set while a group runs its servers on a core of their own (`pinned`); None: anywhere.
        self.cores: Cores | None = None

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

    @contextlib.contextmanager
    def pinned(self) -> Iterator[Cores | None]:
        """Within the block, servers started by `service` run on one core and the load (ghz, and the
        stand-in and Jaeger a scenario starts on `load_cpus`) on the others: a saturated server is measured
        on a core of its own, not against its load generator, the stand-in and the collector."""
        self.cores = Cores.split()
        if self.cores is not None:
            self.say(f"servers on CPU {sorted(self.cores.service)}, load on CPU {sorted(self.cores.load)}")
        try:
            yield self.cores
        finally:
            self.cores = None

    @property
    def service_cpus(self) -> frozenset[int] | None:
        """Where servers run now (None: anywhere)."""
        return self.cores.service if self.cores is not None else None

    @property
    def load_cpus(self) -> frozenset[int] | None:
        """Where load generators, stand-ins and collectors run now (None: anywhere)."""
        return self.cores.load if self.cores is not None else None

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
        result = self.measured(
            watched, lambda: ghz.run_ghz(load, service.address, self.protoset, self.work, self.load_cpus)
        )
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

    def add_step_errors(self, service: ServiceProcess, result: ScenarioResult) -> None:
        """Add a stopped service's step errors to `result`'s (several processes may serve one result)."""
        for kind, count in self.step_errors(service).items():
            result.step_errors[kind] = result.step_errors.get(kind, 0) + count

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
        # boto3's threads are what is measured here (the floor a server is held to): on the servers' core.
        finished = run_to_completion(
            [sys.executable, "-m", "bench.boto_load", *arguments],
            timeout=timeout,
            env=child_env(),
            cpus=self.service_cpus,
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
        service = start_service(
            self.logs,
            name,
            connections,
            log_level or self.plan.log_level,
            env,
            module,
            cpus=self.service_cpus,
        )
        if module == "bench.counted_service":
            self.ensure_protoset(service.address)
        return service

    def previous_service(self, connections: Path) -> ServiceProcess | None:
        """The sync service of PREVIOUS_SYNC_SERVICE, from a git worktree with its own venv (full runs only:
        its first set-up takes a minute). Never bound to the servers' core: what it is compared for is a
        thread per step on the machine's cores, where its threads contend for the interpreter lock across
        both; on one core of its own it ran 907 req/s against the async service's 821 (20261206-031916)."""
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

    def side_by_side(self, runs: Sequence[tuple[ServiceProcess, GhzLoad]]) -> list[LoadResult]:
        """ghz against each service at the same time, one ghz each; each result's `cpu_cores["service"]` and
        `extra["service_cpu_ms_per_request"]` are that service's CPU over the common window.

        Why at once: on this shared machine the CPU a step costs moves by ±20% between two windows a few
        seconds apart (other tenants of the host, caches), for two identical services alike. Two services
        measured in the same window, on the same core, see the same machine: a pair's ratio repeats to about
        1% from window to window, where one after the other two identical services differed by up to 20%.
        Two identical processes still differ from each other by up to 2-3% (docs: Load testing)."""
        before = {service.process.name: service.process.cpu_seconds() for service, _ in runs}

        def one(index: int, service: ServiceProcess, load: GhzLoad) -> LoadResult:
            workdir = self.work / f"side-by-side-{index}"
            workdir.mkdir(exist_ok=True)
            return ghz.run_ghz(load, service.address, self.protoset, workdir, self.load_cpus)

        started = time.perf_counter()
        with ThreadPoolExecutor(len(runs), thread_name_prefix="ghz") as pool:
            futures = [pool.submit(one, index, service, load) for index, (service, load) in enumerate(runs)]
            results = [future.result() for future in futures]  # a failed ghz raises here
        wall = time.perf_counter() - started
        measured: list[LoadResult] = []
        for (service, load), result in zip(runs, results, strict=True):
            used = service.process.cpu_seconds() - before[service.process.name]
            # Per request answered, from the window's CPU: not through ghz's own duration, which differs
            # between the two by the tail of the calls in flight.
            result.extra["service_cpu_ms_per_request"] = (
                round(used / result.requests * 1000, 4) if result.requests else 0.0
            )
            result.cpu_cores = {
                "service": round(used / wall, 3),
                "ghz": round(result.generator_cpu_seconds / wall, 3),
            }
            self.ok_rpcs[(service.process.name, load.call)] += result.ok
            measured.append(result)
        return measured

    def cpu_per_step_at_fixed_rate(
        self, what: str, pairs: Sequence[tuple[ServiceProcess, ScenarioResult]], repetitions: int
    ) -> None:
        """CPU per step at one rate below saturation: each service after the first side by side with the
        first (the reference), both at `SIDE_BY_SIDE_RATE`, in interleaved repetitions. Each result records
        its CPU per step (`cpu_ms_per_step_at_fixed_rate`), each variant also the ratio to the reference
        measured in the same window (`cpu_ratio_at_fixed_rate`), which is what the report judges."""
        rate = SIDE_BY_SIDE_RATE if not self.plan.quick else 20
        (reference, reference_result), variants = pairs[0], pairs[1:]
        for rep in range(repetitions):
            self.say(f"{what} at {rate} req/s each, side by side: repetition {rep + 1}/{repetitions}")
            for service, scenario in variants:
                load = dataclasses.replace(self.generate_load(self.plan.seconds), rate=rate)
                base_run, run = self.side_by_side([(reference, load), (service, load)])
                _record_fixed_rate(base_run, run, reference_result, scenario)
        for _, scenario in pairs:
            scenario.extra["fixed_rate"] = rate

    def side_by_side_pairs(
        self,
        what: str,
        connections: Path,
        reference: tuple[Mapping[str, str], ScenarioResult],
        variants: Sequence[tuple[str, Mapping[str, str], ScenarioResult]],
        pairs: int,
        windows: int,
    ) -> None:
        """Each variant against the reference, side by side, on `pairs` fresh pairs of processes started for
        it (`windows` saturated windows and as many at `SIDE_BY_SIDE_RATE` each). Saturated, both share the
        core and each one's steps per CPU second is what it would serve with the core to itself (a CPU-bound
        server's saturated throughput): their ratio goes in the variant's `throughput_ratio_side_by_side`; at
        the fixed rate, the same keys as `cpu_per_step_at_fixed_rate`.

        Why fresh pairs: two identical service processes side by side differ by up to 2-3%, and keep that
        difference through every window (each its own memory layout and hash seed); one pair measured it as
        part of the variant's cost, several pairs average it out (four pairs: within 1%). Each pair's step
        errors count in the results, and the variant's span counts go in `extra["pair_spans"]`."""
        reference_env, reference_result = reference
        rate = SIDE_BY_SIDE_RATE if not self.plan.quick else 20
        for number in range(pairs):
            for name, env, scenario in variants:
                self.say(f"{what}: {name} side by side, pair {number + 1}/{pairs}")
                base = self.service(f"{what}-reference-{name}-{number}", connections, env=reference_env)
                other = self.service(f"{what}-{name}-{number}", connections, env=env)
                with self.running(base.process, other.process):
                    warm = self.generate_load(self.plan.warmup_seconds)
                    self.side_by_side([(base, warm), (other, warm)])
                    for _ in range(windows):
                        saturated = self.generate_load(self.plan.seconds)
                        base_run, run = self.side_by_side([(base, saturated), (other, saturated)])
                        _record_saturated(base_run, run, scenario)
                        fixed = dataclasses.replace(saturated, rate=rate)
                        base_run, run = self.side_by_side([(base, fixed), (other, fixed)])
                        _record_fixed_rate(base_run, run, reference_result, scenario)
                        # What the variant adds to a step's latency below saturation, from the same window.
                        added = scenario.extra.setdefault("p99_ms_added_at_fixed_rate", [])
                        added.append(round(run.p99_ms - base_run.p99_ms, 2))
                self.add_step_errors(base, reference_result)
                self.add_step_errors(other, scenario)
                scenario.extra.setdefault("pair_spans", []).append(other.span_counts())
        for result in (reference_result, *(scenario for _, _, scenario in variants)):
            result.extra["fixed_rate"] = rate
            result.extra["side_by_side_pairs"] = pairs

    def generate_load(self, seconds: float, concurrency: int | None = None) -> GhzLoad:
        """GenerateOtp on the stand-in connection: a new journey run and identifier per request."""
        return GhzLoad(
            call=ghz.GENERATE,
            concurrency=concurrency or self.plan.concurrency,
            seconds=seconds,
            data=GENERATE_TEMPLATE,
        )


# req/s: below every compared variant's saturation on the reference machine, so CPU per step is the cost itself.
FIXED_RATE = 200
# Fresh process pairs for the side-by-side figures, and windows of each kind a pair (docs: Load testing).
SIDE_BY_SIDE_PAIRS = 4
SIDE_BY_SIDE_WINDOWS = 2
# req/s for each of two services measured side by side on one core: together they keep it about 70% busy.
SIDE_BY_SIDE_RATE = 150


def _record_saturated(base_run: LoadResult, run: LoadResult, scenario: ScenarioResult) -> None:
    """A saturated side-by-side window: the variant's steps per CPU second over the reference's."""
    base, cost = base_run.extra["service_cpu_ms_per_request"], run.extra["service_cpu_ms_per_request"]
    if base and cost:
        scenario.extra.setdefault("throughput_ratio_side_by_side", []).append(round(base / cost, 4))


def _record_fixed_rate(
    base_run: LoadResult, run: LoadResult, reference: ScenarioResult, scenario: ScenarioResult
) -> None:
    """A fixed-rate side-by-side window: each one's CPU per step, and the variant's over the reference's."""
    base, cost = base_run.extra["service_cpu_ms_per_request"], run.extra["service_cpu_ms_per_request"]
    reference.extra.setdefault("cpu_ms_per_step_at_fixed_rate", []).append(base)
    scenario.extra.setdefault("cpu_ms_per_step_at_fixed_rate", []).append(cost)
    if base:
        scenario.extra.setdefault("cpu_ratio_at_fixed_rate", []).append(round(cost / base, 4))


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
