"""Property-based: no request, identifier or payload, however hostile, crashes parsing or leaks a secret."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from otp_step_service.steps.event_data import MAX_STRING_CHARS, REDACTED, Redactor
from otp_step_service.steps.identifiers import InvalidIdentifierError, parse_identifier
from otp_step_service.transport import messages
from stepexecutor.v1 import step_executor_pb2 as pb

_TEXT = st.text(max_size=400)
_ENUM = st.integers(min_value=-5, max_value=40)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    journey_id=_TEXT,
    run=_TEXT,
    step_id=_TEXT,
    connection=_TEXT,
    identifier=_TEXT,
    channel=_ENUM,
    behavior=_ENUM,
    mode=_ENUM,
    scopes=st.lists(_TEXT, max_size=40),
    output=_TEXT,
    ip=_TEXT,
    code=_TEXT,
)
def test_any_request_is_either_parsed_or_refused_field_by_field(
    journey_id: str,
    run: str,
    step_id: str,
    connection: str,
    identifier: str,
    channel: int,
    behavior: int,
    mode: int,
    scopes: list[str],
    output: str,
    ip: str,
    code: str,
) -> None:
    journey = pb.JourneyContext(
        journey_id=journey_id, journey_run_id=run, step_id=step_id, end_user=pb.EndUserContext(ip_address=ip)
    )
    step = pb.StepConfiguration(
        connection=connection,
        user_identifier=identifier,
        otp_channel=channel,  # type: ignore[arg-type]
        scopes=scopes,
        output_variable=output,
        failure_behavior=behavior,  # type: ignore[arg-type]
        event_data=pb.EventDataReporting(mode=mode),  # type: ignore[arg-type]
    )
    for parse, request in (
        (messages.generate_request, pb.GenerateOtpRequest(journey=journey, step=step)),
        (messages.validate_request, pb.ValidateOtpRequest(journey=journey, step=step, otp_code=code)),
    ):
        refused: messages.InvalidRequestError | None = None
        try:
            parse(request)  # type: ignore[operator]
        except messages.InvalidRequestError as exc:  # the only way a request may be refused
            refused = exc
        if refused is not None:
            assert refused.violations and all(field and why for field, why in refused.violations)


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=300))
def test_any_identifier_is_normalized_or_refused_without_echoing_it(raw: str) -> None:
    refused: InvalidIdentifierError | None = None
    try:
        identifier = parse_identifier(raw, "US")
    except InvalidIdentifierError as exc:
        refused = exc
    if refused is not None:
        assert str(refused).startswith("the user identifier")  # fixed texts: the input is never echoed
        return
    assert identifier.value == identifier.value.strip()
    assert parse_identifier(identifier.value, "US") == identifier  # normalizing is idempotent


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=60),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(payload=_JSON, secret=st.text(alphabet="0123456789", min_size=8, max_size=8))
def test_redaction_never_fails_and_never_lets_a_known_secret_through(payload: object, secret: str) -> None:
    # A number of the payload may spell the secret's digits by chance (12500000000000000 holds 00000000): data
    # that is no secret, which redaction leaves alone. Strings carrying it are what is checked.
    assume(not any(secret in json.dumps(n) for n in _numbers(payload)))
    document = {"note": f"code is {secret}!", "nested": [payload, {"otp": secret}], "n": int(secret)}
    redacted = Redactor([secret], reveal_identifiers=False)(document)
    text = json.dumps(redacted)
    assert secret not in text
    assert REDACTED in text
    assert all(len(s) <= MAX_STRING_CHARS + 1 for s in _strings(redacted))


def _numbers(value: object) -> list[object]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []
