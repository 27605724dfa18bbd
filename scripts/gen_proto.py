"""Generate the Python code and type stubs for protos/ into the stepexecutor-proto
distribution (client/stepexecutor-proto/src: the one way generated code is made).

Run through `make proto`. The generators are pinned in the workspace pyproject.toml and uv.lock (grpcio-tools, mypy-protobuf), so the
output is reproducible; tests/test_contract.py regenerates into a temporary folder and fails on any drift.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
DEFAULT_OUT = ROOT / "client" / "stepexecutor-proto" / "src"


def proto_files() -> list[Path]:
    """Every .proto of the contract, relative to protos/."""
    return sorted(p.relative_to(PROTO_ROOT) for p in PROTO_ROOT.rglob("*.proto"))


def generate(out: Path) -> None:
    """Write *_pb2.py, *_pb2_grpc.py and their .pyi stubs under `out`, mirroring the proto packages."""
    out.mkdir(parents=True, exist_ok=True)
    # protoc finds the mypy-protobuf plugins (protoc-gen-mypy*) on PATH: the venv's bin folder.
    venv_bin = str(Path(sys.executable).parent)
    os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    well_known = Path(protoc.__file__).parent / "_proto"
    files = [str(p) for p in proto_files()]
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Every folder of a proto package becomes an importable Python package.
    for proto in proto_files():
        pkg = out / proto.parent
        while pkg != out:
            (pkg / "__init__.py").touch()
            pkg = pkg.parent
        # PEP 561: the stubs ship with the distribution, so callers type-check against the contract.
        (out / proto.parts[0] / "py.typed").touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ns = parser.parse_args()
    if ns.out == DEFAULT_OUT:
        # Start clean so a removed .proto leaves no stale module behind.
        for proto in proto_files():
            shutil.rmtree(DEFAULT_OUT / proto.parts[0], ignore_errors=True)
    generate(ns.out)
    print(f"generated {len(proto_files())} proto file(s) into {ns.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
