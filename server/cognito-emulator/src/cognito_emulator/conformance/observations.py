"""What the checks share: the one-line observations of a report (redacted by construction), the set-up
guard, and the emulator's settings endpoint."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

from .suite import Answer, ConformanceRun

#: The reference's message [obs]; checked loosely (AWS may reword it).
MISMATCH_MESSAGE = "Invalid code received for user"
MASKED = re.compile(r"\*")


def describe(answer: Answer, what: str) -> str:
    """One line for the report: the call, then the error or the shape of the response."""
    if answer.error is not None:
        return f"{what} → {answer.error}: {answer.message}"
    response = answer.response or {}
    if "AuthenticationResult" in response:
        result = response["AuthenticationResult"]
        return (
            f"{what} → AuthenticationResult {{{', '.join(sorted(result))}}} "
            f"(ExpiresIn {result.get('ExpiresIn')}, TokenType {result.get('TokenType')})"
        )
    parts = [f"ChallengeName {answer.challenge}"]
    if answer.session:
        parts.append(f"Session of {len(answer.session)} chars")
    params = answer.parameters
    if "CODE_DELIVERY_DELIVERY_MEDIUM" in params:
        parts.append(f"medium {params['CODE_DELIVERY_DELIVERY_MEDIUM']}")
    if "CODE_DELIVERY_DESTINATION" in params:
        parts.append(f"destination {params['CODE_DELIVERY_DESTINATION']}")
    if "AvailableChallenges" in response:
        parts.append(f"AvailableChallenges {response['AvailableChallenges']}")
    return f"{what} → " + ", ".join(parts)


def needs(run: ConformanceRun, rule_ids: tuple[str, ...], *names: str) -> bool:
    """True when the users / clients ``names`` exist; otherwise the rules are not checked, saying why."""
    missing = [n for n in names if n not in run.pool.users and n not in run.pool.extra_clients]
    if not missing:
        return True
    problems = ", ".join(f"{n}: {run.pool.setup_problems.get(n, 'not created')}" for n in missing)
    for rule_id in rule_ids:
        run.skip(rule_id, f"set-up failed ({problems})")
    return False


def post_settings(url: str, changes: dict[str, Any]) -> None:
    request = urllib.request.Request(  # noqa: S310 - the emulator's own URL
        f"{url}/_settings",
        data=json.dumps(changes).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - the emulator's own URL
        pass
