"""The folders tell the architecture: the step logic depends on no transport, SDK or telemetry library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

STEPS = (
    Path(__file__).resolve().parent.parent
    / "server"
    / "otp-step-service"
    / "src"
    / "otp_step_service"
    / "steps"
)
FORBIDDEN = ("grpc", "google.protobuf", "stepexecutor", "boto3", "botocore", "opentelemetry", "redis", "jwt")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", sorted(STEPS.glob("*.py")), ids=lambda p: p.name)
def test_step_logic_imports_no_transport_sdk_or_telemetry(module: Path) -> None:
    leaked = {name for name in _imports(module) if name.split(".")[0] in {f.split(".")[0] for f in FORBIDDEN}}
    leaked |= {
        name for name in _imports(module) if name.startswith("otp_step_service.") and ".steps" not in name
    }
    assert not leaked, f"{module.name} imports {sorted(leaked)}"
