"""ghz runs: the descriptors from the server's reflection, the command line, and the report as a LoadResult.

Why a protoset and not `ghz` reflection: the service's own reflection resolves method symbols
(MethodAwareReflection), but the grpc.aio variant of scenario 2a serves no reflection at all, and one
FileDescriptorSet fetched once from the real server (by service name) describes every run the same way,
without a reflection round trip per run. The calls are still described by what the server itself serves.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from bench.processes import run_to_completion

HEALTH_CHECK = "grpc.health.v1.Health/Check"
GENERATE = "stepexecutor.v1.StepExecutor/GenerateOtp"
VALIDATE = "stepexecutor.v1.StepExecutor/ValidateOtp"
SERVICES = ("stepexecutor.v1.StepExecutor", "grpc.health.v1.Health")


class GhzError(RuntimeError):
    """ghz could not run (not a failed request: those are counted in the result)."""


_PROJECT_BIN = Path(__file__).resolve().parents[1] / ".bin"


def find_ghz() -> str:
    """The pinned ghz in the project's .bin/ (`make tools`), else ghz on PATH."""
    found = shutil.which("ghz", path=str(_PROJECT_BIN)) or shutil.which("ghz")
    if not found:
        raise GhzError("ghz is not installed: run `make tools` (it installs the pinned ghz into .bin/)")
    return found


def protoset_from_reflection(address: str, services: Sequence[str] = SERVICES) -> bytes:
    """A serialized FileDescriptorSet with `services` and every file they import, from server reflection."""
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        def ask(request: reflection_pb2.ServerReflectionRequest) -> None:
            for answer in stub.ServerReflectionInfo(iter([request]), timeout=10):
                if answer.HasField("error_response"):
                    raise GhzError(f"reflection: {answer.error_response.error_message} for {request}")
                for raw in answer.file_descriptor_response.file_descriptor_proto:
                    proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
                    files.setdefault(proto.name, proto)

        for service in services:
            ask(reflection_pb2.ServerReflectionRequest(file_containing_symbol=service))
        missing = _missing_dependencies(files)
        while missing:
            for name in missing:
                ask(reflection_pb2.ServerReflectionRequest(file_by_filename=name))
            missing = _missing_dependencies(files)
    # Dependencies first, as protoc writes them.
    ordered: list[descriptor_pb2.FileDescriptorProto] = []

    def visit(name: str) -> None:
        proto = files[name]
        if proto in ordered:
            return
        for dependency in proto.dependency:
            visit(dependency)
        ordered.append(proto)

    for name in sorted(files):
        visit(name)
    return descriptor_pb2.FileDescriptorSet(file=ordered).SerializeToString()


def _missing_dependencies(files: Mapping[str, descriptor_pb2.FileDescriptorProto]) -> list[str]:
    return sorted({d for f in files.values() for d in f.dependency if d not in files})


@dataclass(frozen=True, slots=True)
class GhzLoad:
    """One ghz run, timed (`seconds`: ghz -z) or counted (`total`: ghz -n); never unbounded.

    ghz v0.121.0 cannot bound one run both ways: `-x` (max duration) sets the request count to MaxInt32
    (runner/options.go), whatever `-n` says. So a timed run's count is bounded by its time, and a counted
    run's time by `max_seconds`, after which the harness kills ghz and the run fails.
    """

    call: str
    concurrency: int
    seconds: float | None = None
    total: int | None = None
    max_seconds: float = 120.0
    data: Mapping[str, Any] | None = None
    data_file: Path | None = None
    connections: int = 1
    # ghz is Go and cheap, but on 2 cores it must not take the service's core: one OS thread of Go code.
    cpus: int = 1
    timeout_seconds: float = 10.0
    # A fixed request rate (ghz --rps) instead of as fast as the service answers: for CPU per request.
    rate: int | None = None

    def command(self, ghz: str, protoset: Path, address: str, output: Path) -> list[str]:
        """The ghz command line (JSON report to `output`)."""
        command = [
            ghz,
            "--insecure",
            "--protoset",
            str(protoset),
            "--call",
            self.call,
            "--concurrency",
            str(self.concurrency),
            "--connections",
            str(self.connections),
            "--timeout",
            f"{self.timeout_seconds:g}s",
            "--cpus",
            str(self.cpus),
            "--format",
            "json",
            "--output",
            str(output),
        ]
        if self.rate is not None:
            command += ["--rps", str(self.rate)]
        if self.total is not None:
            command += ["--total", str(self.total)]
        else:
            # In-flight requests finish and count when the time is up (the default cancels them: errors).
            command += ["--duration", f"{self.seconds or 1:g}s", "--duration-stop", "wait"]
        if self.data_file is not None:
            command += ["--data-file", str(self.data_file)]
        else:
            command += ["--data", json.dumps(dict(self.data or {}), separators=(",", ":"))]
        return [*command, address]


@dataclass
class LoadResult:
    """What one load run measured (from the load generator's side)."""

    requests: int
    ok: int
    errors: dict[str, int]
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    generator_cpu_seconds: float
    # Set by the scenario: CPU cores used by each process during the run (CPU seconds / wall seconds).
    cpu_cores: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def run_ghz(
    load: GhzLoad, address: str, protoset: Path, workdir: Path, cpus: frozenset[int] | None = None
) -> LoadResult:
    """Run ghz to completion (on `cpus`, if given) and read its report."""
    output = workdir / "ghz-report.json"
    output.unlink(missing_ok=True)
    finished = run_to_completion(
        load.command(find_ghz(), protoset, address, output),
        timeout=(load.seconds or 0) + load.max_seconds + load.timeout_seconds,
        env=os.environ,
        cpus=cpus,
    )
    if finished.returncode != 0 or not output.exists():
        raise GhzError(
            f"ghz exited with {finished.returncode}: {finished.stderr.decode(errors='replace').strip()}"
        )
    report = json.loads(output.read_text())
    output.unlink()
    return result_from_report(report, finished.cpu_seconds)


def result_from_report(report: Mapping[str, Any], cpu_seconds: float) -> LoadResult:
    """A LoadResult from ghz's JSON report (`details` are not kept)."""
    statuses: dict[str, int] = dict(report.get("statusCodeDistribution") or {})
    ok = int(statuses.pop("OK", 0))
    count = int(report.get("count", 0))
    seconds = float(report.get("total", 0)) / 1e9
    percentiles = {
        int(item["percentage"]): float(item["latency"]) / 1e6
        for item in report.get("latencyDistribution") or []
    }
    return LoadResult(
        requests=count,
        ok=ok,
        errors={f"grpc:{k}": int(v) for k, v in statuses.items() if v},
        seconds=seconds,
        # Completed OK requests per second: errors are not throughput.
        rps=ok / seconds if seconds else 0.0,
        p50_ms=percentiles.get(50, 0.0),
        p95_ms=percentiles.get(95, 0.0),
        p99_ms=percentiles.get(99, 0.0),
        generator_cpu_seconds=cpu_seconds,
        extra={"end_reason": report.get("endReason", "")},
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.ghz protoset ADDRESS FILE`: write the server's descriptors for `ghz --protoset`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.ghz")
    sub = parser.add_subparsers(dest="command", required=True)
    protoset = sub.add_parser("protoset", help="fetch descriptors from a running server's reflection")
    protoset.add_argument("address", help="host:port of the StepExecutor service, e.g. 127.0.0.1:50051")
    protoset.add_argument("file", type=Path, help="where to write the FileDescriptorSet")
    args = parser.parse_args(argv)
    args.file.write_bytes(protoset_from_reflection(args.address))
    print(f"wrote {args.file}: use it with ghz --protoset {args.file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
