"""Flame graphs of a saturated service, tracing off and on: `python -m bench.flame --out docs/tracing`.

Both services run at once against one canned stand-in (and, for the traced one, Jaeger over OTLP); ghz
saturates one, then the other, while py-spy samples it (native frames on, idle frames off, so the graph shows
where CPU goes, not where the loop waits). The SVGs are py-spy's; the per-process CPU of each run is printed
so the reading can quote CPU per step beside the graph.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import scenarios
from bench.ghz import LoadResult
from bench.processes import ManagedProcess, stop_all
from bench.stack import ROOT, ServiceProcess, start_jaeger, start_standin


def _py_spy() -> str:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        raise SystemExit("bench.flame: py-spy not found (it is in the dev dependency group: make venv)")
    return found


def _sampled(
    bench: scenarios.Bench,
    spy: str,
    service: ServiceProcess,
    output: Path,
    form: str,
    args: argparse.Namespace,
    others: dict[str, ManagedProcess],
) -> LoadResult:
    command = [spy, "record", "--native", "--threads", "--rate", str(args.rate)]
    command += ["--duration", str(int(args.seconds)), "--format", form, "--output", str(output)]
    command += ["--pid", str(service.process.pid)]
    spy_run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # attached before the load starts
    run = bench.ghz(service, bench.generate_load(args.seconds - 1.0), {"service": service.process, **others})
    _, err = spy_run.communicate(timeout=args.seconds + 60)
    if spy_run.returncode != 0:
        print(err.decode(errors="replace"), file=sys.stderr)
    return run


# Whose work a sample on the event loop's thread is: the innermost frame of OpenTelemetry (or of the
# service's telemetry module) or of the step's own code and libraries; stdlib and native frames count
# with their caller (protobuf encoding with the encoder, a socket write with whoever wrote).
TRACING_FILES = (
    "trace/__init__.py",
    "opentelemetry",
    "grpc/_aio_server.py",  # opentelemetry-instrumentation-grpc (grpcio's own is grpc/aio/_server.py)
    "grpc/_server.py",
    "grpc/_utilities.py",
    "grpc/filters",
    "attributes/__init__.py",
    "context/__init__.py",
    "context/contextvars_context.py",
    "util/__init__.py",
    "util/_decorator.py",
    "_decorator.py",
    "_shared_internal",
    "semconv",
    "observability/telemetry.py",
    "observability/otlp_spans.py",
    "observability/span_export.py",
    "observability/step_tracer.py",
    "transport/server_spans.py",
    "sdk/resources",
)
STEP_FILES = (
    "otp_step_service/",
    "aiobotocore/",
    "botocore/",
    "aiohttp/",
    "bench/",
    "stepexecutor/",
    "google/",
)


def _owner(frame: str) -> str | None:
    where = frame.rpartition("(")[2]
    if any(marker in where for marker in TRACING_FILES):
        return "tracing: " + where.partition(":")[0]
    if any(marker in where for marker in STEP_FILES):
        return "step"
    return None


# Leaf frames of a thread that waits (py-spy's idle detection misses some with native frames on).
IDLE = ("epoll_wait", "PyThread_acquire_lock", "Condition.wait", "_queue_SimpleQueue_get", "poll (")


def breakdown(raw: Path, top: int = 14) -> dict[str, float]:
    """Share of samples by the file of the innermost Python frame (native callees count with it: protobuf
    encoding with the OTLP encoder, a socket write with its caller); threads other than the event loop's
    are counted whole, by thread name. From py-spy's collapsed stacks (`--threads`)."""
    totals: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0].partition(": ")[2]
        if any(marker in frame for frame in frames[-4:] for marker in IDLE):
            totals["(idle: waiting)"] += int(count)
            continue
        if thread != "MainThread":
            totals[f"thread {thread}"] += int(count)
            continue
        owner = next((kind for frame in reversed(frames) if (kind := _owner(frame)) is not None), "other")
        totals[owner] += int(count)
    overall = sum(totals.values()) or 1
    return {name: n / overall for name, n in totals.most_common(top)}


def _record(bench: scenarios.Bench, spy: str, jaeger_binary: str, args: argparse.Namespace) -> None:
    """Both services sampled in turn, each SVG written and its breakdown printed."""
    collector = start_jaeger(bench.logs, jaeger_binary, cpus=bench.load_cpus)
    jaeger, otlp = collector.process, collector.otlp_grpc
    standin = start_standin(bench.logs, "standin-flame", cpus=bench.load_cpus)
    connections = bench.standin_connection(standin, name="standin-flame")
    services = {
        "untraced": bench.service("service-untraced", connections),
        "traced": bench.service(
            "service-traced",
            connections,
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp, "OTEL_TRACES_EXPORTER": "otlp"},
        ),
    }
    with bench.running(jaeger, standin.process, *(s.process for s in services.values())):
        for service in services.values():
            bench.ghz(service, bench.generate_load(3.0), {"service": service.process})
        for name, service in services.items():
            svg = args.out / f"{name}{args.suffix}.svg"
            raw = bench.folder / f"{name}{args.suffix}.collapsed.txt"  # large: not kept beside the SVG
            for output, form in ((svg, "flamegraph"), (raw, "raw")):
                run = _sampled(bench, spy, service, output, form, args, {"jaeger": jaeger})
            cpu = run.cpu_cores["service"]
            print(
                f"{name}: {run.rps:.0f} req/s, service {cpu:.2f} cores, "
                f"{cpu / run.rps * 1000 if run.rps else 0:.3f} ms CPU per step (while sampled) -> {svg}"
            )
            for category, share in breakdown(raw).items():
                print(f"    {share:6.1%}  {category}")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.flame", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "tracing")
    parser.add_argument("--seconds", type=float, default=20.0, help="sampled seconds per service")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--suffix", default="", help="added to the SVG names (before/after a change)")
    args = parser.parse_args(argv)
    jaeger_binary = shutil.which("jaeger", path=str(ROOT / ".bin")) or shutil.which("jaeger")
    if jaeger_binary is None:
        raise SystemExit("bench.flame: needs .bin/jaeger (make tools)")
    spy = _py_spy()
    args.out.mkdir(parents=True, exist_ok=True)
    bench = scenarios.Bench(scenarios.Plan.full(tracing=True), Path(tempfile.mkdtemp(prefix="bench-flame-")))
    try:
        # As the tracing group runs them: the services on a core of their own, the rest on the others.
        with bench.pinned():
            _record(bench, spy, jaeger_binary, args)
    finally:
        stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
