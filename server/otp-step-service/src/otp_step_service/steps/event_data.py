"""Journey event data: what a step reports for its step-completed event, redacted and bounded.

Redaction is not optional and does not trust key names alone: every value equal to one of the run's known
secrets (the code and the tokens the step received; the Cognito session and the client secret never reach an
outcome or a payload the service builds) is replaced, JWT-shaped strings are
replaced, and email addresses and phone numbers are masked the way Cognito masks destinations unless the
connection allows identifiers in clear.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .identifiers import mask_destination
from .journey import EventDataMode, StepConfiguration
from .outcomes import Abort, FailureBranch, StepOutcome, Success

REDACTED = "[REDACTED]"
MAX_EVENT_BYTES = 8192
MAX_STRING_CHARS = 1024

_SECRET_KEY = re.compile(r"(?i)(session|token|secret|password|passcode|otp_?code|authorization|secret_hash)")
_JWT = re.compile(r"^eyJ[\w-]+\.[\w-]+\.[\w-]*$")
# Bounded quantifiers: an unbounded local part backtracks from every position of a long run of word
# characters (quadratic time on a hostile payload).
_EMAIL = re.compile(r"[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")
_PHONE = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass(frozen=True, slots=True)
class EventData:
    """Reportable data for one step execution."""

    mode: EventDataMode
    data: Mapping[str, Any]
    truncated: bool


class Redactor:
    """Removes secrets and masks identifiers in arbitrary JSON-like data."""

    def __init__(
        self, secrets: Iterable[str], reveal_identifiers: bool, identifiers: Iterable[str] = ()
    ) -> None:
        self._secrets = frozenset(s for s in secrets if s)
        self._longest = max((len(s) for s in self._secrets), default=0)
        self._reveal = reveal_identifiers
        # The identifier as typed may be in no standard shape ("(555) 555-0100"); it is masked wherever it occurs.
        self._identifiers = frozenset(i for i in identifiers if len(i) >= 3)

    def __call__(self, value: Any, key: str = "") -> Any:
        """A redacted copy of `value` (keys are redacted like values: a code can be a key too)."""
        if key and _SECRET_KEY.search(key):
            return REDACTED
        if isinstance(value, Mapping):
            return {self._text(str(k)): self(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        if isinstance(value, str):
            return self._text(value)
        # JSON has no integers: an 8-digit code typed into a payload arrives as 12345678.0 (leading zeros lost).
        if isinstance(value, int | float) and not isinstance(value, bool) and self._numeric_secret(value):
            return REDACTED
        return value

    def _numeric_secret(self, value: float) -> bool:
        if value != value or abs(value) >= 1e16 or not float(value).is_integer():
            return False
        digits = str(int(abs(value)))
        return any(len(s) >= 6 and (s in digits or s.lstrip("0") == digits) for s in self._secrets)

    def _text(self, text: str) -> str:
        # Cut first, so every check below is bounded whatever the payload holds, but keep enough past the
        # limit that a secret straddling it is still found whole (then cut to the limit at the end).
        cut = len(text) > MAX_STRING_CHARS
        if cut:
            text = text[: MAX_STRING_CHARS + self._longest]
        if text in self._secrets or _JWT.match(text):
            return REDACTED
        for secret in self._secrets:
            if len(secret) >= 6 and secret in text:
                text = text.replace(secret, REDACTED)
        if not self._reveal:
            for identifier in self._identifiers:
                if identifier in text:
                    text = text.replace(identifier, mask_destination(identifier))
            if _PHONE.match(text):
                return mask_destination(text)
            text = _EMAIL.sub(lambda m: mask_destination(m.group(0)), text)
        return text[:MAX_STRING_CHARS] + "…" if cut else text


def step_event_data(
    step_type: str,
    journey: Mapping[str, str],
    step: StepConfiguration,
    outcome: StepOutcome[Any],
    secrets: Iterable[str],
    reveal_identifiers: bool,
    identifiers: Iterable[str] = (),
) -> EventData | None:
    """The event data for the step's reporting choice, or None when it reports nothing."""
    if step.event_data_mode is EventDataMode.NONE:
        return None  # the default: nothing to build, on every step
    redact = Redactor(secrets, reveal_identifiers, identifiers)
    if step.event_data_mode is EventDataMode.CUSTOM_PAYLOAD:
        return _bounded(EventDataMode.CUSTOM_PAYLOAD, redact(dict(step.custom_payload)))
    output: dict[str, Any] = {"outcome": outcome.kind}
    match outcome:
        case Success(result=result):
            reported = result.as_variable()
            reported.pop("tokens", None)  # tokens are never reported, even when the connection returns them
            output["result"] = reported
        case FailureBranch(failure=failure):
            output["error"] = failure.as_variable()
        case Abort(failure=failure, end_user_error=error):
            output["error"] = failure.as_variable()
            output["client_error"] = {"code": error.code}
    data = {
        "input": {
            **journey,
            "step_type": step_type,
            "connection": step.connection,
            "user_identifier": step.user_identifier.strip(),
            "otp_channel": step.channel.value if step.channel else "",
            "scopes": list(step.effective_scopes),
            "failure_behavior": step.failure_behavior.value,
            "output_variable": step.output_variable,
            "error_output_variable": step.error_output_variable,
        },
        "output": output,
    }
    return _bounded(EventDataMode.STEP_INPUT_OUTPUT, redact(data))


def _bounded(mode: EventDataMode, data: dict[str, Any]) -> EventData:
    """Keep whole top-level entries, in order, while they fit in MAX_EVENT_BYTES; mark what was cut."""
    if len(json.dumps(data, default=str)) <= MAX_EVENT_BYTES:
        return EventData(mode, data, truncated=False)
    kept: dict[str, Any] = {}
    used = 2
    for key, value in data.items():
        size = len(json.dumps({key: value}, default=str))
        if used + size > MAX_EVENT_BYTES:
            continue
        kept[key] = value
        used += size
    return EventData(mode, kept, truncated=True)
