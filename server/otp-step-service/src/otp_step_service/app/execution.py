"""Running one step: find the connection, execute, report — the seam between transport and steps.

Everything a step execution produces besides its outcome happens here, once: the step span with its
attributes and journey event, the event data returned to the orchestrator, and the one log line per step.
A bug inside a step becomes an INTERNAL failure outcome, never a crashed RPC. A step that could not run
(StepNotRunError: the store failed before Cognito was asked) is counted as a refusal, marked on its span and
logged (outcome `refused`), and raised on for the transport to answer with its status.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic

from otp_step_service.observability import telemetry
from otp_step_service.steps.branching import fail
from otp_step_service.steps.clock import SYSTEM_CLOCK, Clock
from otp_step_service.steps.deadline import Deadline
from otp_step_service.steps.decoys import DecoyMasks
from otp_step_service.steps.errors import ChallengeStoreError, StepNotRunError, UnknownConnectionError
from otp_step_service.steps.event_data import EventData, step_event_data
from otp_step_service.steps.generate import GenerateOtpStep
from otp_step_service.steps.identifiers import mask_destination
from otp_step_service.steps.journey import GenerateRequest, JourneyContext, StepConfiguration, ValidateRequest
from otp_step_service.steps.model import ConnectionCheck
from otp_step_service.steps.outcomes import (
    CodeSent,
    CodeVerified,
    FailureCode,
    S,
    StepFailure,
    StepOutcome,
    Success,
)
from otp_step_service.steps.ports import ChallengeStore, Connection
from otp_step_service.steps.validate import ValidateOtpStep

if TYPE_CHECKING:
    from otp_step_service.observability.metrics import Metrics

log = logging.getLogger("otp_step_service.steps")

GENERATE = "cognito_otp_generate"
VALIDATE = "cognito_otp_validate"


@dataclass(frozen=True, slots=True)
class Executed(Generic[S]):
    """A finished step: its outcome and its reportable event data."""

    outcome: StepOutcome[S]
    event_data: EventData | None


class StepRunner:
    """Executes Generate and Validate for the configured connections."""

    def __init__(
        self,
        connections: Mapping[str, Connection],
        store: ChallengeStore,
        clock: Clock = SYSTEM_CLOCK,
        metrics: Metrics | None = None,
        decoys: DecoyMasks | None = None,
    ) -> None:
        self._connections = dict(connections)
        self._metrics = metrics
        # Steps running per Connection object (by id): a reload closes a retired connection once it is unused.
        self._using: Counter[int] = Counter()
        self.refusals: Counter[str] = Counter()
        """Steps that could not run, by reason (StepNotRunError.reason): plain counts, read at scrape time as
        `otp_rejected_calls_total{reason}`."""
        self.store = store
        self.clock = clock
        self._generate = GenerateOtpStep(store, clock, decoys)
        self._validate = ValidateOtpStep(store, clock)

    @property
    def connections(self) -> Mapping[str, Connection]:
        """The configured connections, by name."""
        return self._connections

    def replace_connections(self, connections: Mapping[str, Connection]) -> None:
        """Serve new steps with `connections` (a reload); steps already running keep the one they looked up."""
        self._connections = dict(connections)

    def steps_using(self, connection: Connection) -> int:
        """Steps running now on `connection`."""
        return self._using[id(connection)]

    def connection(self, name: str) -> Connection:
        """The named connection, or UnknownConnectionError."""
        try:
            return self._connections[name]
        except KeyError:
            raise UnknownConnectionError(name) from None

    async def generate(self, request: GenerateRequest, deadline: Deadline) -> Executed[CodeSent]:
        """Run Cognito OTP Generate."""
        connection = self.connection(request.step.connection)
        return await self._execute(
            GENERATE,
            request.journey,
            request.step,
            connection,
            lambda: self._generate.run(request, connection, deadline),
            secrets=(),
        )

    async def validate(self, request: ValidateRequest, deadline: Deadline) -> Executed[CodeVerified]:
        """Run Cognito OTP Validate."""
        connection = self.connection(request.step.connection)
        return await self._execute(
            VALIDATE,
            request.journey,
            request.step,
            connection,
            lambda: self._validate.run(request, connection, deadline),
            secrets=(request.otp_code.strip(), request.otp_code),
        )

    async def check_connection(self, name: str, deadline: Deadline) -> Sequence[ConnectionCheck]:
        """The connection self-test."""
        return await self.connection(name).gateway.self_test(deadline)

    async def _execute(
        self,
        step_type: str,
        journey: JourneyContext,
        step: StepConfiguration,
        connection: Connection,
        run: Callable[[], Awaitable[StepOutcome[Any]]],
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
            self._using[id(connection)] += 1
            try:
                outcome: StepOutcome[Any] = await run()
            except StepNotRunError as exc:
                self._refused(step_type, journey_fields, step, connection, exc, started, span)
                raise
            except ChallengeStoreError as exc:
                log.warning("challenge store unavailable: %s", exc)  # its message is log-safe
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
            finally:
                self._using[id(connection)] -= 1
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
        if self._metrics is not None:
            self._metrics.step_finished(
                step_type,
                step.connection,
                channel,
                step.user_identifier,
                connection.policy.default_phone_region,
                outcome,
                time.perf_counter() - started,
                validating=step_type == VALIDATE,
            )
        return Executed(outcome, event_data)

    def _refused(
        self,
        step_type: str,
        journey_fields: Mapping[str, str],
        step: StepConfiguration,
        connection: Connection,
        exc: StepNotRunError,
        started: float,
        span: Any,
    ) -> None:
        """A step that could not run: counted, on its span (`error.type`), and logged like a step that did."""
        self.refusals[exc.reason] += 1
        if isinstance(exc.__cause__, ChallengeStoreError):
            log.warning("challenge store unavailable, the step did not run: %s", exc.__cause__)  # log-safe
        else:
            log.warning("step not run (%s)", exc.reason)
        telemetry.step_refused(span, exc.reason)
        trace_id = format(span.get_span_context().trace_id, "032x") if span.is_recording() else ""
        self._log(step_type, journey_fields, step, connection, exc, started, trace_id)

    @staticmethod
    def _log(
        step_type: str,
        journey_fields: Mapping[str, str],
        step: StepConfiguration,
        connection: Connection,
        outcome: StepOutcome[Any] | StepNotRunError,
        started: float,
        trace_id: str,
    ) -> None:
        if not log.isEnabledFor(logging.INFO):
            return  # the fields below cost more than the rest of the log call
        identifier = step.user_identifier.strip()
        fields: dict[str, Any] = {
            "step_type": step_type,
            **journey_fields,
            "connection": step.connection,
            "channel": step.channel.value if step.channel else "",
            "identifier": identifier
            if connection.policy.reveal_identifiers
            else mask_destination(identifier),
            "outcome": "refused" if isinstance(outcome, StepNotRunError) else outcome.kind,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            "trace_id": trace_id,
        }
        if isinstance(outcome, StepNotRunError):
            fields |= {"failure_code": outcome.reason, "category": "system", "retryable": True}
        elif (failure := outcome.failed) is not None:
            fields |= {
                "failure_code": failure.code.value,
                "category": failure.category.value,
                "retryable": failure.retryable,
                "attempts_remaining": failure.attempts_remaining,
                "cognito_error": failure.cognito_error,
            }
        log.info("step.completed", extra={"step": fields})


def _token_values(outcome: StepOutcome[Any]) -> list[str]:
    match outcome:
        case Success(result=CodeVerified(tokens=tokens)) if tokens is not None:
            return [tokens.id_token, tokens.access_token, tokens.refresh_token]
    return []
