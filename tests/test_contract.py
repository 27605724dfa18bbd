"""The contract: generated code matches protos/ exactly (regenerated with the pinned generators)."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "client" / "stepexecutor-proto" / "src"


def test_generated_code_has_not_drifted_from_the_proto(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(tmp_path)], check=True
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(
        p.relative_to(GENERATED)
        for p in (GENERATED / "stepexecutor").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert generated == committed, "run `make proto` and commit the result"
    mismatched = [str(p) for p in generated if not filecmp.cmp(tmp_path / p, GENERATED / p, shallow=False)]
    assert not mismatched, f"stale generated code (run `make proto`): {mismatched}"


def test_every_failure_code_of_the_service_exists_in_the_contract() -> None:
    from otp_step_service.steps.outcomes import FailureCode
    from stepexecutor.v1 import step_executor_pb2 as pb

    in_proto = {name.removeprefix("FAILURE_CODE_") for name in pb.FailureCode.keys()} - {"UNSPECIFIED"}  # noqa: SIM118 - an enum wrapper, not a dict
    assert in_proto == {code.value for code in FailureCode}
