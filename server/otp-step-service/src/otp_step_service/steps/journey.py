"""A step request in the product's words: the journey context and the step's configuration."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .claims import effective_scopes
from .model import EndUser
from .outcomes import Channel, FailureBehavior


class EventDataMode(enum.StrEnum):
    """The step's "report step data" choice."""

    NONE = "NONE"
    STEP_INPUT_OUTPUT = "STEP_INPUT_OUTPUT"
    CUSTOM_PAYLOAD = "CUSTOM_PAYLOAD"


@dataclass(frozen=True, slots=True)
class JourneyContext:
    """Where the step runs."""

    journey_id: str
    journey_run_id: str
    step_id: str
    tenant_id: str = ""
    step_execution_id: str = ""
    end_user: EndUser = field(default_factory=EndUser)


@dataclass(frozen=True, slots=True)
class StepConfiguration:
    """The step's fields, as set by the journey author (the user identifier already evaluated)."""

    connection: str
    user_identifier: str
    channel: Channel | None
    scopes: tuple[str, ...] = ()
    output_variable: str = ""
    error_output_variable: str = ""
    failure_behavior: FailureBehavior = FailureBehavior.FAILURE_BRANCH
    event_data_mode: EventDataMode = EventDataMode.NONE
    custom_payload: Mapping[str, Any] = field(default_factory=dict)

    @property
    def effective_scopes(self) -> tuple[str, ...]:
        """The scopes, or the default `openid profile email`."""
        return effective_scopes(self.scopes)

    def __repr__(self) -> str:
        # The raw identifier is personal data; keep it out of debug output.
        return f"StepConfiguration(connection={self.connection!r}, channel={self.channel})"


@dataclass(frozen=True, slots=True)
class CallerQuota:
    """What the authenticated caller (the orchestrator that sent the step) may spend on codes."""

    name: str
    send_budgets: tuple[tuple[int, int], ...]  # (codes, window seconds), over all the caller's connections


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """Run "Cognito OTP Generate"."""

    journey: JourneyContext
    step: StepConfiguration
    caller: CallerQuota | None = None  # set by the transport when the caller has send budgets


@dataclass(frozen=True, slots=True)
class ValidateRequest:
    """Run "Cognito OTP Validate". `otp_code` is secret: never logged, traced or returned."""

    journey: JourneyContext
    step: StepConfiguration
    otp_code: str

    def __repr__(self) -> str:
        return f"ValidateRequest({self.journey!r}, {self.step!r}, otp_code=<redacted>)"
