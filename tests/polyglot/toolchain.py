"""Finding the Go and Node toolchains the polyglot tests need, and failing loudly under CI without them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".bin"


def under_ci() -> bool:
    """CI runs `.ci/run` with CI=true: a missing tool there is a broken machine, never a skip."""
    return os.environ.get("CI", "").lower() == "true"


def missing(what: str, fix: str) -> None:
    """Fail under CI, skip (saying what to install) when run by hand."""
    message = f"{what} is missing: {fix}"
    if under_ci():
        pytest.fail(message)
    pytest.skip(message)


def require_binary(name: str, fix: str) -> str:
    """The path of `name` from .bin/ or PATH."""
    local = BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        missing(name, fix)
    assert found is not None
    return found


def require_path(path: Path, fix: str) -> Path:
    """`path` must exist (an install step made it)."""
    if not path.exists():
        missing(str(path.relative_to(ROOT)), fix)
    return path


def run(command: list[str], cwd: Path, timeout: float = 300) -> str:
    """Run a build step; its output is the assertion message when it fails."""
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout
