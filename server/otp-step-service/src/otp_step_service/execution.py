"""Running one step: find the connection, execute, report — the seam between transport and steps.

Everything a step execution produces besides its outcome happens here, once: the step span with its
attributes and journey event, the event data returned to the orchestrator, and the one log line per step.
A bug inside a step becomes an INTERNAL failure outcome, never a crashed RPC.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic

from otp_step_service import telemetry
from otp_step_service.steps.branching import fail
from otp_step_service.steps.challenges import ChallengeStore, ChallengeStoreError
from otp_step_service.steps.deadline import Deadline
from otp_step_service.steps.event_data import EventData, step_event_data
from otp_step_service.steps.generate import GenerateOtpStep
from otp_step_service.steps.identifiers import mask_destination
from otp_step_service.steps.journey import GenerateRequest, JourneyContext, StepConfiguration, ValidateRequest
from otp_step_service.steps.outcomes import (
    FailureCode,
    GenerateSuccess,
    S,
    StepFailure,
    StepOutcome,
    ValidateSuccess,
)
from otp_step_service.steps.ports import Connection, ConnectionCheck
from otp_step_service.steps.validate import ValidateOtpStep

log = logging.getLogger("otp_step_service.steps")

GENERATE = "cognito_otp_generate"
VALIDATE = "cognito_otp_validate"


class UnknownConnectionError(LookupError):
    """The step names a connection that is not configured."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(f"no connection named {name!r} is configured (known: {', '.join(known) or 'none'})")
        self.name = name


@dataclass(frozen=True, slots=True)
class Executed(Generic[S]):
    """A finished step: its outcome and its reportable event data."""

    outcome: StepOutcome[S]
    event_data: EventData | None


class StepRunner:
    """Executes Generate and Validate for the configured connections."""

    def __init__(self, connections: Mapping[str, Connection], store: ChallengeStore) -> None:
        self._connections = dict(connections)
        self.store = store
        self._generate = GenerateOtpStep(store)
        self._validate = ValidateOtpStep(store)

    @property
    def connections(self) -> Mapping[str, Connection]:
        """The configured connections, by name."""
        return self._connections

    def connection(self, name: str) -> Connection:
        """The named connection, or UnknownConnectionError."""
        try:
            return self._connections[name]
        except KeyError:
            raise UnknownConnectionError(name, sorted(self._connections)) from None

    def generate(self, request: GenerateRequest, deadline: Deadline) -> Executed[GenerateSuccess]:
        """Run Cognito OTP Generate."""
        connection = self.connection(request.step.connection)
        return self._execute(
            GENERATE,
            request.journey,
            request.step,
            connection,
            lambda: self._generate.run(request, connection, deadline),
            secrets=(),
        )

    def validate(self, request: ValidateRequest, deadline: Deadline) -> Executed[ValidateSuccess]:
        """Run Cognito OTP Validate."""
        connection = self.connection(request.step.connection)
        return self._execute(
            VALIDATE,
            request.journey,
            request.step,
            connection,
            lambda: self._validate.run(request, connection, deadline),
            secrets=(request.otp_code.strip(), request.otp_code),
        )

    def check_connection(self, name: str, deadline: Deadline) -> Sequence[ConnectionCheck]:
        """The connection self-test."""
        return self.connection(name).gateway.self_test(deadline)

    def _execute(
        self,
        step_type: str,
        journey: JourneyContext,
        step: StepConfiguration,
        connection: Connection,
        run: Any,
        secrets: Sequence[str],
    ) -> Executed[Any]:
        started = time.perf_counter()
        journey_fields = {
            "journey_id": journey.journey_id,
            "journey_run_id": journey.journey_run_id,
            "step_id": journey.step_id,
            "tenant_id": journey.tenant_id,
        }
        channel = step.channel.value if step.channel else ""
        with telemetry.step_span(
            step_type, lambda: telemetry.step_attributes(step_type, journey_fields, step.connection, channel)
        ) as span:
            try:
                outcome: StepOutcome[Any] = run()
            except ChallengeStoreError as exc:
                log.warning("challenge store unavailable: %s", type(exc.__cause__ or exc).__name__)
                outcome = fail(
                    step,
                    StepFailure(
                        FailureCode.CHALLENGE_STORE_UNAVAILABLE, "the challenge store could not be reached"
                    ),
                    validating=step_type == VALIDATE,
                )
            except Exception:
                log.exception(
                    "step failed unexpectedly", extra={"step": {"step_type": step_type, **journey_fields}}
                )
                outcome = fail(
                    step,
                    StepFailure(FailureCode.INTERNAL, "the service failed unexpectedly; see its logs"),
                    validating=step_type == VALIDATE,
                )
            known_secrets = [*secrets, *_token_values(outcome)]
            event_data = step_event_data(
                step_type,
                {k: v for k, v in journey_fields.items() if v},
                step,
                outcome,
                known_secrets,
                connection.policy.reveal_identifiers,
                identifiers=(step.user_identifier.strip(),),
            )
            telemetry.record_outcome(span, outcome, event_data)
            trace_id = format(span.get_span_context().trace_id, "032x") if span.is_recording() else ""
        self._log(step_type, journey_fields, step, connection, outcome, started, trace_id)
        return Executed(outcome, event_data)

    @staticmethod
    def _log(
        step_type: str,
        journey_fields: Mapping[str, str],
        step: StepConfiguration,
        connection: Connection,
        outcome: StepOutcome[Any],
        started: float,
        trace_id: str,
    ) -> None:
        if not log.isEnabledFor(logging.INFO):
            return  # the fields below cost more than the rest of the log call
        failure = outcome.failed
        identifier = step.user_identifier.strip()
        fields: dict[str, Any] = {
            "step_type": step_type,
            **journey_fields,
            "connection": step.connection,
            "channel": step.channel.value if step.channel else "",
            "identifier": identifier
            if connection.policy.reveal_identifiers
            else mask_destination(identifier),
            "outcome": outcome.kind,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            "trace_id": trace_id,
        }
        if failure is not None:
            fields |= {
                "failure_code": failure.code.value,
                "category": failure.category.value,
                "retryable": failure.retryable,
                "attempts_remaining": failure.attempts_remaining,
                "cognito_error": failure.cognito_error,
            }
        log.info("step.completed", extra={"step": fields})


def _token_values(outcome: StepOutcome[Any]) -> list[str]:
    success = outcome.success
    if isinstance(success, ValidateSuccess) and success.tokens is not None:
        t = success.tokens
        return [t.id_token, t.access_token, t.refresh_token]
    return []
