"""The outbox contract and fault injection, over HTTP."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from .support import Demo, http


# ---- outbox -------------------------------------------------------------------------------------------
def test_outbox_lists_messages_oldest_first_with_the_contract_fields(demo: Demo) -> None:
    demo.start("ada", "EMAIL_OTP")
    demo.start("alan", "SMS_OTP")
    demo.start("ada", "SMS_OTP")

    messages = demo.outbox()
    assert [(m["destination"], m["medium"]) for m in messages] == [
        ("ada@example.com", "EMAIL"),
        ("+15555550101", "SMS"),
        ("+15555550100", "SMS"),
    ]
    for message in messages:
        assert {"destination", "medium", "code", "message", "sent_at"} <= set(message)
        assert message["code"] in message["message"]
        assert message["sent_at"].endswith("Z")
        assert datetime.fromisoformat(message["sent_at"]).tzinfo is not None  # RFC 3339 with zone
    assert [m["sent_at"] for m in messages] == sorted(m["sent_at"] for m in messages)


def test_outbox_filters_by_destination(demo: Demo) -> None:
    demo.start("ada", "EMAIL_OTP")
    demo.start("grace", "EMAIL_OTP")
    demo.start("ada", "EMAIL_OTP")

    ada = demo.outbox("ada@example.com")
    assert len(ada) == 2
    assert {m["destination"] for m in ada} == {"ada@example.com"}
    assert demo.outbox("+15555550100") == []
    assert len(demo.outbox("+15555550100")) == 0


def test_delete_empties_the_outbox(demo: Demo) -> None:
    demo.start("ada", "EMAIL_OTP")
    status, body = http("DELETE", f"{demo.endpoint_url}/_outbox")
    assert (status, body) == (200, {"deleted": 1})
    assert demo.outbox() == []


def test_moto_reset_empties_the_outbox_and_forgets_sessions(demo: Demo) -> None:
    started = demo.start("ada", "EMAIL_OTP")
    status, _ = http("POST", f"{demo.endpoint_url}/moto-api/reset", {})
    assert status == 200
    assert demo.outbox() == []
    assert demo.client.list_user_pools(MaxResults=10)["UserPools"] == []
    with pytest.raises(ClientError):
        demo.answer("EMAIL_OTP", started["Session"], "ada", EMAIL_OTP_CODE="12345678")


def test_the_outbox_is_bounded(demo: Demo, emulator: Any) -> None:
    emulator.runtime.update_settings({"outbox_limit": 2})
    demo.start("ada", "EMAIL_OTP")
    demo.start("ada", "EMAIL_OTP")
    first, second = demo.outbox()
    demo.start("ada", "EMAIL_OTP")
    messages = demo.outbox()
    assert len(messages) == 2
    assert messages[0] == second  # the oldest was dropped
    assert first not in messages


# ---- faults -------------------------------------------------------------------------------------------
def add_fault(demo: Demo, **spec: Any) -> dict[str, Any]:
    status, body = http("POST", f"{demo.endpoint_url}/_faults", spec)
    assert status == 201, body
    return dict(body)


def test_a_fault_is_returned_with_an_id_and_listed(demo: Demo) -> None:
    fault = add_fault(demo, operation="InitiateAuth", latency_ms=10, rate=1.0, count=2)
    assert fault["id"]
    assert {k: fault[k] for k in ("operation", "latency_ms", "error", "rate", "count")} == {
        "operation": "InitiateAuth",
        "latency_ms": 10,
        "error": None,
        "rate": 1.0,
        "count": 2,
    }
    status, body = http("GET", f"{demo.endpoint_url}/_faults")
    assert status == 200
    assert [f["id"] for f in body["faults"]] == [fault["id"]]


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"operation": "InitiateAuth"},
        {"operation": "X", "error": "Boom"},
        {"operation": "X", "latency_ms": 5, "rate": 2},
    ],
)
def test_an_invalid_fault_is_refused_with_the_reason(demo: Demo, spec: dict[str, Any]) -> None:
    status, body = http("POST", f"{demo.endpoint_url}/_faults", spec)
    assert status == 400
    assert body["error"]


def test_latency_delays_the_matching_operation_only(demo: Demo) -> None:
    add_fault(demo, operation="InitiateAuth", latency_ms=300)
    t0 = time.perf_counter()
    demo.start("ada", "EMAIL_OTP")
    assert time.perf_counter() - t0 >= 0.3
    t0 = time.perf_counter()
    demo.client.list_user_pools(MaxResults=1)
    assert time.perf_counter() - t0 < 0.3


def test_too_many_requests_comes_back_as_cognito_sends_it(demo: Demo) -> None:
    add_fault(demo, operation="InitiateAuth", error="TooManyRequestsException")
    with pytest.raises(ClientError) as excinfo:
        demo.start("ada", "EMAIL_OTP")
    response = excinfo.value.response
    assert response["Error"]["Code"] == "TooManyRequestsException"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == "TooManyRequestsException"
    assert demo.outbox() == []  # the call never reached Cognito


def test_internal_error_is_a_500(demo: Demo) -> None:
    add_fault(demo, operation="RespondToAuthChallenge", error="InternalErrorException")
    started = demo.start("ada", "EMAIL_OTP")
    with pytest.raises(ClientError) as excinfo:
        demo.answer("EMAIL_OTP", started["Session"], "ada", EMAIL_OTP_CODE=demo.last_code("ada@example.com"))
    assert excinfo.value.response["Error"]["Code"] == "InternalErrorException"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


def test_drop_connection_is_a_connection_error_for_botocore(demo: Demo) -> None:
    add_fault(demo, operation="InitiateAuth", error="DropConnection", count=1)
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        demo.start("ada", "EMAIL_OTP")
    assert demo.outbox() == []
    # The next call gets a fresh connection and works.
    assert demo.start("ada", "EMAIL_OTP")["ChallengeName"] == "EMAIL_OTP"


def test_count_expires_the_fault_after_that_many_calls(demo: Demo) -> None:
    add_fault(demo, operation="*", error="TooManyRequestsException", count=2)
    for _ in range(2):
        with pytest.raises(ClientError):
            demo.start("ada", "EMAIL_OTP")
    assert demo.start("ada", "EMAIL_OTP")["ChallengeName"] == "EMAIL_OTP"
    assert http("GET", f"{demo.endpoint_url}/_faults")[1] == {"faults": []}


def test_rate_zero_never_hits(demo: Demo) -> None:
    add_fault(demo, operation="InitiateAuth", error="TooManyRequestsException", rate=0.0)
    assert demo.start("ada", "EMAIL_OTP")["ChallengeName"] == "EMAIL_OTP"


def test_delete_clears_every_fault(demo: Demo) -> None:
    add_fault(demo, operation="*", error="InternalErrorException")
    add_fault(demo, operation="InitiateAuth", latency_ms=50)
    status, body = http("DELETE", f"{demo.endpoint_url}/_faults")
    assert (status, body) == (200, {"deleted": 2})
    assert demo.start("ada", "EMAIL_OTP")["ChallengeName"] == "EMAIL_OTP"


def test_faults_spare_the_control_endpoints_and_jwks(demo: Demo) -> None:
    add_fault(demo, operation="*", error="InternalErrorException")
    assert http("GET", f"{demo.endpoint_url}/_outbox")[0] == 200
    assert http("GET", f"{demo.endpoint_url}/{demo.seed.user_pool_id}/.well-known/jwks.json")[0] == 200
