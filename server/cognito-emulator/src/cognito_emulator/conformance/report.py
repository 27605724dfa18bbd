"""The conformance report, as Markdown (for people) and JSON (for tools), checked for secrets before writing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rules import RuleResult, Verdict
from .suite import Redactor


class ReportLeakError(RuntimeError):
    """The report would contain a code, session, token or secret; it is not written."""


@dataclass
class ConformanceReport:
    """What one run found, and where it ran."""

    target: dict[str, Any]
    """Where the run went: mode, endpoint, region, pool and client ids, code source (no secrets)."""
    results: list[RuleResult]
    calls: int
    seconds: float
    codes_per_user: dict[str, int]
    left_behind: list[str] = field(default_factory=list)
    """Resources the clean-up could not delete."""

    @property
    def failed(self) -> list[RuleResult]:
        """The rules that failed."""
        return [r for r in self.results if r.verdict is Verdict.FAILED]

    def counts(self) -> dict[str, int]:
        """How many rules passed, failed, were not checked."""
        return {v.value: sum(1 for r in self.results if r.verdict is v) for v in Verdict}

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return {
            "target": self.target,
            "summary": self.counts(),
            "calls": self.calls,
            "seconds": round(self.seconds, 1),
            "codes_per_user": self.codes_per_user,
            "left_behind": self.left_behind,
            "rules": [r.to_json() for r in self.results],
        }

    def to_markdown(self) -> str:
        """The report as a Markdown document: a summary and one table row per rule."""
        counts = self.counts()
        target = ", ".join(f"{k} `{v}`" for k, v in self.target.items() if v is not None)
        lines = [
            "# Cognito conformance report",
            "",
            f"Target: {target}.",
            "",
            f"**{counts['passed']} passed, {counts['failed']} failed, {counts['not checked']} not checked** "
            f"in {self.seconds:.1f} s, {self.calls} Cognito calls, at most "
            f"{max(self.codes_per_user.values(), default=0)} codes per user.",
            "",
            "| Rule | Mark | Result | Observed | Emulator knob | Connection setting |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for result in self.results:
            verdict = result.verdict.value + (f" — {result.reason}" if result.reason else "")
            lines.append(
                "| "
                + " | ".join(
                    _cell(part)
                    for part in (
                        f"`{result.rule.id}`: {result.rule.statement}",
                        f"[{result.rule.mark}]",
                        verdict,
                        "; ".join(result.observed) or "-",
                        result.emulator_setting
                        or ("-" if result.rule.knob is None else f"{result.rule.knob}: -"),
                        result.connection_setting or "-",
                    )
                )
                + " |"
            )
        if self.left_behind:
            lines += ["", "Could not delete: " + ", ".join(self.left_behind) + "."]
        return "\n".join(lines) + "\n"

    def write(self, folder: Path, redactor: Redactor) -> tuple[Path, Path]:
        """Write ``report.md`` and ``report.json`` into ``folder``, refusing if any secret would leak."""
        markdown, document = self.to_markdown(), json.dumps(self.to_json(), indent=2)
        if redactor.leaks(markdown) or redactor.leaks(document):
            raise ReportLeakError("the report contains a code, session, token or secret; not written")
        folder.mkdir(parents=True, exist_ok=True)
        md_path, json_path = folder / "report.md", folder / "report.json"
        md_path.write_text(markdown, encoding="utf-8")
        json_path.write_text(document + "\n", encoding="utf-8")
        return md_path, json_path


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
