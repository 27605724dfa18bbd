"""Conformance suite: every rule the emulator implements, checked against any cognito-idp endpoint.

Run it with ``make conformance`` or ``python -m cognito_emulator.conformance`` (the local emulator by default;
a real pool with ``--user-pool-id`` / ``--client-id`` or ``--mode create``). See the docs, "Checking against a real pool".

From Python::

    from cognito_emulator.conformance import ConformanceOptions, run_conformance

    outcome = run_conformance(ConformanceOptions())  # the local emulator, default settings
    outcome.report.failed  # [] when the emulator keeps every rule
"""

from .codes import CodeSource, CodeSourceError, CommandCodeSource, MailboxCodeSource, OutboxCodeSource
from .report import ConformanceReport, ReportLeakError
from .rules import RULES, Rule, RuleResult, Verdict
from .runner import ConformanceOptions, ConformanceOutcome, ConformanceSetupError, run_conformance
from .suite import SuiteLimits

__all__ = [
    "RULES",
    "CodeSource",
    "CodeSourceError",
    "CommandCodeSource",
    "ConformanceOptions",
    "ConformanceOutcome",
    "ConformanceReport",
    "ConformanceSetupError",
    "MailboxCodeSource",
    "OutboxCodeSource",
    "ReportLeakError",
    "Rule",
    "RuleResult",
    "SuiteLimits",
    "Verdict",
    "run_conformance",
]
