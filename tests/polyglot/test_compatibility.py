"""No silent breaking change: the contract is held by `buf breaking` (FILE rules, buf.yaml) against a baseline.

The baseline (docs, "The contract", Compatibility policy):
1. OTP_STEP_BREAKING_AGAINST, a git ref, when set;
2. else the last release tag (`v<major>...`) reachable from HEAD: what deployed callers were built from;
3. else the merge base of HEAD with `main` (or `origin/main`): what this branch changes;
4. and when HEAD is on main itself (a fresh clone of main: the merge base is HEAD), the commit before it,
   HEAD^1: its first parent, so a merge is compared with main as it was before the merge.

A deliberate break passes only when a commit between the baseline and HEAD carries a
`Breaking-Change-Accepted: <why>` trailer (the equivalent of a "breaking change approved" label); the
findings are still reported, as a warning. Within v1 that should never be needed: see the policy.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import warnings
from pathlib import Path

import pytest

from .toolchain import ROOT, missing, require_binary

TRAILER = "Breaking-Change-Accepted"
CONTRACT = ("protos", "buf.yaml")


def git(*args: str) -> str | None:
    """git's output, or None when the command fails (no such ref, not a repository)."""
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def baseline() -> tuple[str, str]:
    """The commit to compare with, and why that one."""
    chosen = os.environ.get("OTP_STEP_BREAKING_AGAINST")
    if chosen:
        commit = git("rev-parse", "--verify", "--quiet", f"{chosen}^{{commit}}")
        assert commit, f"OTP_STEP_BREAKING_AGAINST={chosen} is not a commit"
        return commit, f"OTP_STEP_BREAKING_AGAINST={chosen}"
    tag = git("describe", "--tags", "--abbrev=0", "--match", "v[0-9]*", "HEAD")
    if tag:
        return str(git("rev-parse", f"{tag}^{{commit}}")), f"the last release tag {tag}"
    head = str(git("rev-parse", "HEAD"))
    main = next(
        (ref for ref in ("main", "origin/main") if git("rev-parse", "--verify", "--quiet", ref)), None
    )
    base = git("merge-base", "HEAD", main) if main else None
    if base and base != head:
        return base, f"the merge base with {main}"
    parent = git("rev-parse", "--verify", "--quiet", "HEAD^1")
    if parent:
        return parent, "HEAD^1: HEAD is on main, so the commit before it"
    if git("rev-parse", "--is-shallow-repository") == "true":
        missing("the history before HEAD", "fetch the full history (git fetch --unshallow)")
    pytest.skip("HEAD is the first commit: there is no earlier contract to break")


def accepted_breaks(base: str) -> list[str]:
    """The Breaking-Change-Accepted trailers of the commits between the baseline and HEAD."""
    log = git("log", f"--format=%(trailers:key={TRAILER},valueonly)", f"{base}..HEAD") or ""
    return [line.strip() for line in log.splitlines() if line.strip()]


def export_contract(commit: str, folder: Path) -> bool:
    """Write protos/ and buf.yaml as they were at `commit` into `folder`; False when it had no contract."""
    if git("cat-file", "-e", f"{commit}:protos") is None:
        return False
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, *CONTRACT],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return True


def buf_breaking(buf: str, against: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [buf, "breaking", "--against", str(against)], cwd=cwd, capture_output=True, text=True, check=False
    )


def test_the_contract_has_no_breaking_change_against_its_baseline(tmp_path: Path) -> None:
    buf = require_binary("buf", "run `make tools`")
    if git("rev-parse", "--git-dir") is None:
        missing("a git checkout", "run the suite from a git clone (the baseline is a commit)")
    base, why = baseline()
    if not export_contract(base, tmp_path):
        pytest.skip(f"the baseline ({why}, {base[:12]}) has no protos/: nothing to break")
    result = buf_breaking(buf, tmp_path)
    if result.returncode == 0:
        return
    findings = (result.stdout + result.stderr).strip()
    accepted = accepted_breaks(base)
    assert accepted, (
        f"breaking change(s) against {why} ({base[:12]}):\n{findings}\n"
        "Keep v1 compatible (docs/contract.md, 'Compatibility policy'). A deliberate break needs a v2 package, or, only before any "
        f"caller depends on it, a commit with a '{TRAILER}: <why>' trailer."
    )
    warnings.warn(
        f"breaking change(s) against {why} ({base[:12]}) accepted by {TRAILER}: {accepted}\n{findings}",
        stacklevel=1,
    )


def test_buf_breaking_catches_a_removed_field(tmp_path: Path) -> None:
    """The check itself: a copy of the contract with one field removed fails against the real one."""
    buf = require_binary("buf", "run `make tools`")
    changed = tmp_path / "changed"
    shutil.copytree(ROOT / "protos", changed / "protos")
    shutil.copy(ROOT / "buf.yaml", changed / "buf.yaml")
    proto = changed / "protos" / "stepexecutor" / "v1" / "step_executor.proto"
    text = proto.read_text()
    assert "  string tenant_id = 4;\n" in text
    proto.write_text(text.replace("  string tenant_id = 4;\n", ""))
    result = buf_breaking(buf, ROOT, cwd=changed)
    assert result.returncode == 100, result  # buf's exit code for "breaking changes found"
    assert "tenant_id" in result.stdout, result.stdout
