"""The service stays truthful when Cognito's inferred rules differ from the emulator's defaults.

Each test runs against three emulators: the defaults, one whose sessions die on the first wrong code
(``attempt_cap=1``) and one that sends a user's only OTP factor without being asked
(``auto_select_single_factor=true``). The service runs as a process (``python -m otp_step_service serve``)
with a connection whose ``max_attempts`` matches the emulator's cap, as the conformance report says to set it.
"Truthful" means: every attempt the service says is left really is, an exhausted or failed step really cannot
sign in, and an unknown user is answered like a real one.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cognito_emulator import EmulatorServer, EmulatorSettings, SeedResult, seed_demo
from cognito_emulator.connections_file import write_connections_file, write_secret_file
from cognito_emulator.seed import cognito_client
from harness import Emulator, Journeys, start_service_process, wrong_code
from otp_step_client import StepExecutorClient
from stepexecutor.v1 import step_executor_pb2 as pb

VARIANTS = {
    "defaults": EmulatorSettings(),
    "attempt_cap=1": EmulatorSettings(attempt_cap=1),
    "auto_select_single_factor=true": EmulatorSettings(auto_select_single_factor=True),
}
#: Users whose only factor is one OTP (no password): where auto-selection can happen.
OTTO = ("otto", "otto@example.com", None)
PIA = ("pia", None, "+15555550102")
#: (identifier, channel, where the code goes)
SIGN_INS = [
    ("ada@example.com", "EMAIL", "ada@example.com"),
    ("otto@example.com", "EMAIL", "otto@example.com"),
    ("+15555550102", "SMS", "+15555550102"),
]


@dataclass
class Matrix:
    """One emulator variant, the service process in front of it, and journeys to run."""

    variant: str
    settings: EmulatorSettings
    journeys: Journeys
    emulator: Emulator

    @property
    def cap(self) -> int:
        """The emulator's attempt cap, which the ``matched`` connection's ``max_attempts`` equals."""
        return self.settings.attempt_cap

    def send(self, identifier: str, channel: str, destination: str, connection: str = "matched") -> Any:
        """Generate; returns the journey and the code that arrived."""
        before = len(self.emulator.outbox(destination))
        response, journey = self.journeys.generate(identifier, channel=channel, connection=connection)
        assert response.WhichOneof("outcome") == "success", response
        return journey, self.emulator.latest_code(destination, after=before)


def write_matrix_connections(folder: Path, seed: SeedResult, cap: int) -> Path:
    """Connections for one variant: ``matched`` (max_attempts = cap), ``matched-open`` (no enumeration
    protection) and ``three`` (the default max_attempts, whatever the cap)."""
    secret_file = write_secret_file(folder / "demo.secret", seed.client_secret)
    base = {
        "region": seed.region,
        "user_pool_id": seed.user_pool_id,
        "client_id": seed.client_id,
        "client_secret_file": secret_file,
        "endpoint_url": seed.endpoint_url,
        "default_phone_region": "US",
        "send_limit": 1000,
        "resend_cooldown_seconds": 0,
        "lockout_threshold": 100,
    }
    connections = {
        "matched": {"max_attempts": cap},
        "matched-open": {"max_attempts": cap, "user_enumeration_protection": False},
        "three": {"max_attempts": 3},
    }
    return write_connections_file(
        folder / "connections.toml", {name: {**base, **values} for name, values in connections.items()}
    )


def add_single_factor_users(endpoint_url: str, seed: SeedResult) -> None:
    """otto (email only) and pia (phone only), without passwords: one OTP factor each."""
    admin = cognito_client(endpoint_url, seed.region)
    for username, email, phone in (OTTO, PIA):
        attributes = [{"Name": "given_name", "Value": username.title()}]
        if email:
            attributes += [{"Name": "email", "Value": email}, {"Name": "email_verified", "Value": "true"}]
        if phone:
            attributes += [
                {"Name": "phone_number", "Value": phone},
                {"Name": "phone_number_verified", "Value": "true"},
            ]
        admin.admin_create_user(
            UserPoolId=seed.user_pool_id,
            Username=username,
            UserAttributes=attributes,
            MessageAction="SUPPRESS",
        )


@pytest.fixture(scope="module", params=list(VARIANTS), ids=list(VARIANTS))
def matrix(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    """The service process in front of one emulator variant."""
    variant: str = request.param
    settings = VARIANTS[variant]
    folder = tmp_path_factory.mktemp(variant.replace("=", "-"))
    with EmulatorServer(host="127.0.0.1", port=0, settings=settings) as server:
        seed = seed_demo(server.endpoint_url)
        add_single_factor_users(server.endpoint_url, seed)
        connections = write_matrix_connections(folder, seed, settings.attempt_cap)
        process, port = start_service_process(
            connections, folder / "service.log", env={"OTP_STEP_SELF_TEST": "warn"}
        )
        try:
            emulator = Emulator(server.endpoint_url, seed)
            with StepExecutorClient(f"127.0.0.1:{port}", timeout=10) as client:
                yield Matrix(variant, settings, Journeys(client, emulator), emulator)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)


@pytest.mark.parametrize(("identifier", "channel", "destination"), SIGN_INS)
def test_every_attempt_the_service_promises_is_real(
    matrix: Matrix, identifier: str, channel: str, destination: str
) -> None:
    for wrong_codes in range(matrix.cap):
        journey, code = matrix.send(identifier, channel, destination)
        for n in range(wrong_codes):
            answer = matrix.journeys.validate(journey, identifier, wrong_code(code), connection="matched")
            assert answer.failure.code == pb.FAILURE_CODE_INVALID_CODE, answer
            assert answer.failure.attempts_remaining == matrix.cap - n - 1
        right = matrix.journeys.validate(journey, identifier, code, connection="matched")
        assert right.WhichOneof("outcome") == "success", (wrong_codes, right)


@pytest.mark.parametrize(("identifier", "channel", "destination"), SIGN_INS)
def test_the_last_promised_attempt_ends_the_challenge(
    matrix: Matrix, identifier: str, channel: str, destination: str
) -> None:
    journey, code = matrix.send(identifier, channel, destination)
    answers = [
        matrix.journeys.validate(journey, identifier, wrong_code(code), connection="matched")
        for _ in range(matrix.cap)
    ]
    assert [(a.failure.code, a.failure.attempts_remaining) for a in answers] == [
        (pb.FAILURE_CODE_INVALID_CODE, matrix.cap - n - 1) for n in range(matrix.cap - 1)
    ] + [(pb.FAILURE_CODE_ATTEMPTS_EXHAUSTED, 0)]
    after = matrix.journeys.validate(journey, identifier, code, connection="matched")
    assert after.failure.code == pb.FAILURE_CODE_CHALLENGE_NOT_FOUND, after


def test_an_unknown_user_is_answered_like_a_real_one(matrix: Matrix) -> None:
    def attempts(identifier: str) -> list[tuple[int, int]]:
        response, journey = matrix.journeys.generate(identifier, connection="matched")
        assert response.WhichOneof("outcome") == "success", response
        return [
            (answer.failure.code, answer.failure.attempts_remaining)
            for answer in (
                matrix.journeys.validate(journey, identifier, "12345678", connection="matched")
                for _ in range(matrix.cap + 1)
            )
        ]

    assert attempts("nobody@example.com") == attempts("grace@example.com")


@pytest.mark.parametrize("identifier", ["otto@example.com", "+15555550102"])
def test_a_channel_the_user_lacks_is_reported_and_nothing_can_be_validated(
    matrix: Matrix, identifier: str
) -> None:
    channel = "SMS" if "@" in identifier else "EMAIL"
    response, journey = matrix.journeys.generate(identifier, channel=channel, connection="matched-open")
    assert response.failure.code == pb.FAILURE_CODE_CHANNEL_NOT_AVAILABLE, response
    after = matrix.journeys.validate(journey, identifier, "12345678", connection="matched-open")
    assert after.failure.code == pb.FAILURE_CODE_CHALLENGE_NOT_FOUND


@pytest.mark.parametrize(
    ("identifier", "inbox"), [("otto@example.com", "otto@example.com"), ("+15555550102", "+15555550102")]
)
def test_a_generate_that_fails_sends_no_code(
    matrix: Matrix, identifier: str, inbox: str, request: pytest.FixtureRequest
) -> None:
    if matrix.settings.auto_select_single_factor:
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                raises=AssertionError,
                reason="with auto_select_single_factor Cognito answers PREFERRED_CHALLENGE for the missing channel "
                "by sending the user's only OTP on the other channel: Generate ends CHANNEL_NOT_AVAILABLE, yet a "
                "code was delivered (and a journey falling back to that channel sends a second one)",
            )
        )
    channel = "SMS" if "@" in identifier else "EMAIL"
    before = len(matrix.emulator.outbox(inbox))
    response, _ = matrix.journeys.generate(identifier, channel=channel, connection="matched-open")
    assert response.failure.code == pb.FAILURE_CODE_CHANNEL_NOT_AVAILABLE
    assert len(matrix.emulator.outbox(inbox)) == before


def test_attempts_promised_beyond_the_pools_cap_are_real(
    matrix: Matrix, request: pytest.FixtureRequest
) -> None:
    """The connection keeps the default max_attempts = 3 whatever the pool's cap: the case the report warns of."""
    if matrix.cap < 3:
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                raises=AssertionError,
                reason="max_attempts = 3 over a pool whose sessions die on the first wrong code: the wrong code "
                "gets INVALID_CODE with attempts_remaining=2 (Cognito gives no sign its cap is lower), then the "
                "right code gets ATTEMPTS_EXHAUSTED: configure max_attempts as make conformance measures it",
            )
        )
    journey, code = matrix.send("ada@example.com", "EMAIL", "ada@example.com", connection="three")
    wrong = matrix.journeys.validate(journey, "ada@example.com", wrong_code(code), connection="three")
    assert (wrong.failure.code, wrong.failure.attempts_remaining) == (pb.FAILURE_CODE_INVALID_CODE, 2)
    right = matrix.journeys.validate(journey, "ada@example.com", code, connection="three")
    assert right.WhichOneof("outcome") == "success", right
