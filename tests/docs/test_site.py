"""The docs site builds strictly and its reference pages say what the code says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_generated_reference_pages_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_reference.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_site_builds_strictly_with_every_page_in_the_nav(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).with_name("mkdocs")
    result = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    # Strict mode fails on broken links and on pages left out of the nav.
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "reference" / "settings" / "index.html").exists()


HISTORY = re.compile(r"\bissues?\s+#?\d+|Target \(issue|missed[ ]target", re.IGNORECASE)


def test_no_file_carries_process_history() -> None:
    """The product speaks of itself: no issue numbers or missed-target logs in docs, code or tests."""
    tracked = subprocess.run(
        [
            "git",
            "ls-files",
            "docs",
            "README.md",
            "CHANGELOG.md",
            "server",
            "client",
            "tests",
            "bench",
            "deploy",
            "examples",
            "scripts",
            "Makefile",
            "mk",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    untracked_docs = [str(p.relative_to(ROOT)) for p in ROOT.glob("docs/**/*.md")]
    found = []
    for name in sorted(set(tracked) | set(untracked_docs)):
        path = ROOT / name
        if "node_modules" in name or not path.is_file() or path.suffix in {".png", ".svg", ".lock", ".sum"}:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [f"{name}: {m.group(0)}" for m in HISTORY.finditer(text)]
    assert not found, found
