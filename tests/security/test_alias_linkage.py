"""A refusal one alias earned never shows through another, whatever state the other alias is in.

The attacker holds two identifiers and wants to know whether they reach one person: it spends the person's
budget or locks them out through one (an email), then watches what the other (a phone number) answers, next
to what a number nobody has answers to the same calls. Every person here is new to the pool and to the store
(fresh users per run); the service is a real one on a real port, with its store in memory or on Redis.
"""

from __future__ import annotations

import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from cognito_emulator.connections_file import write_connections_file, write_secret_file
from harness import (
    Emulator,
    Journeys,
    Person,
    connection_tables,
    fresh_journeys,
    new_person,
    unused_number,
    wrong_code,
)
from otp_step_client import Journey
from stepexecutor.v1 import step_executor_pb2 as pb

INVALID, EXHAUSTED = pb.FAILURE_CODE_INVALID_CODE, pb.FAILURE_CODE_ATTEMPTS_EXHAUSTED
SEND_LIMIT = 6  # "email-only"


class Connections(NamedTuple):
    """This module's connections file, and the pool of its "email-only" connection."""

    path: Path
    email_only_pool: str


@pytest.fixture(scope="module")
def connections(
    connections_file: Path, emulator: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> Connections:
    """This module's connections file (a service with few connections starts in a fraction of a second): the
    suite's "lockout" (4 wrong codes lock a user out, a 30 s cooldown), and "email-only" on a pool that sends
    codes by email only (SMS costs money) and signs users in by email or phone number (send_limit 6 per
    900 s)."""
    admin = emulator.admin()
    pool = admin.create_user_pool(
        PoolName=f"email-only-{uuid.uuid4().hex[:8]}",
        UserPoolTier="ESSENTIALS",
        Policies={"SignInPolicy": {"AllowedFirstAuthFactors": ["PASSWORD", "EMAIL_OTP"]}},
        AliasAttributes=["email", "phone_number"],
        MfaConfiguration="OFF",
    )["UserPool"]
    client = admin.create_user_pool_client(
        UserPoolId=pool["Id"],
        ClientName="otp-steps",
        GenerateSecret=True,
        ExplicitAuthFlows=["ALLOW_USER_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        PreventUserExistenceErrors="ENABLED",
    )["UserPoolClient"]
    folder = tmp_path_factory.mktemp("alias-linkage")
    email_only = {
        "region": emulator.seed.region,
        "endpoint_url": emulator.endpoint_url,
        "user_pool_id": pool["Id"],
        "client_id": client["ClientId"],
        "client_secret_file": write_secret_file(folder / "email-only.secret", client["ClientSecret"]),
        "send_limit": SEND_LIMIT,
        "send_window_seconds": 900,
    }
    tables = {**connection_tables(connections_file, "lockout"), "email-only": email_only}
    return Connections(write_connections_file(folder / "connections.toml", tables), pool["Id"])


def _lock_out(journeys: Journeys, emulator: Emulator, person: Person) -> None:
    """Lock the person out through their email ("lockout": 4 wrong codes): two challenges, two wrong each."""
    for _ in range(2):
        before = len(emulator.outbox(person.email))
        sent, journey = journeys.generate(person.email, connection="lockout")
        assert sent.WhichOneof("outcome") == "success", sent
        code = emulator.latest_code(person.email, after=before)
        for _ in range(2):
            journeys.validate(journey, person.email, wrong_code(code), connection="lockout")


def _shown(answer: Any) -> tuple[str, int]:
    return answer.WhichOneof("outcome") or "", answer.failure.code


def _generate(journeys: Journeys, phone: str, journey: Journey) -> Any:
    return journeys.generate(phone, channel="SMS", connection="lockout", journey=journey)[0]


def test_a_generate_through_another_alias_answers_as_that_alias_alone_would(
    connections: Connections, emulator: Emulator, store_settings: dict[str, str]
) -> None:
    # Generate through her phone in a journey, lock her out through her email, then, in that same journey,
    # Generate again within the cooldown and retry the first execution. Alone, a phone number answers
    # RESEND_TOO_SOON and the replay of its first answer; hers used to answer IDENTIFIER_LOCKED to both.
    with fresh_journeys(connections.path, emulator, **store_settings) as journeys:
        person = new_person(emulator)
        phones = {"hers": person.phone, "stranger's": unused_number()}
        journeys_of = {who: journeys.journey(step_execution_id="first") for who in phones}
        firsts = {who: _generate(journeys, phone, journeys_of[who]) for who, phone in phones.items()}
        assert {_shown(first) for first in firsts.values()} == {("success", 0)}, firsts
        _lock_out(journeys, emulator, person)
        answers = {}
        for who, phone in phones.items():
            again = _generate(journeys, phone, journeys_of[who].at_step("send-code", "second"))
            replay = _generate(journeys, phone, journeys_of[who])
            answers[who] = [_shown(again), _shown(replay), replay.success == firsts[who].success]
    assert answers["hers"] == answers["stranger's"], answers
    assert answers["hers"] == [("failure", pb.FAILURE_CODE_RESEND_TOO_SOON), ("success", 0), True]


def test_a_validate_through_another_alias_answers_as_wrong_codes_and_judges_none(
    connections: Connections, emulator: Emulator, store_settings: dict[str, str]
) -> None:
    # A challenge through her phone, then she is locked out through her email; then codes at the phone's
    # challenge: the right one first. A stranger's number gets INVALID_CODE, INVALID_CODE, ATTEMPTS_EXHAUSTED,
    # each as long as Cognito takes to judge a code (150 ms more here); hers answered IDENTIFIER_LOCKED at
    # once. Now as a stranger's, and the right code signs nobody in: no code is judged while she is locked.
    with fresh_journeys(connections.path, emulator, **store_settings) as journeys:
        person = new_person(emulator)
        phones = {"hers": person.phone, "stranger's": unused_number()}
        journeys_of = {who: journeys.journey() for who in phones}
        for who, phone in phones.items():
            assert _shown(_generate(journeys, phone, journeys_of[who])) == ("success", 0)
        code = emulator.latest_code(person.phone)
        emulator.inject(operation="RespondToAuthChallenge", latency_ms=150)
        try:
            _lock_out(journeys, emulator, person)
            answers: dict[str, list[Any]] = {}
            seconds: dict[str, list[float]] = {}
            for who, phone in phones.items():
                answers[who], seconds[who] = [], []
                for typed in (code, wrong_code(code), wrong_code(code)):
                    started = time.perf_counter()
                    answer = journeys.validate(journeys_of[who], phone, typed, connection="lockout")
                    seconds[who].append(time.perf_counter() - started)
                    answers[who].append(
                        (*_shown(answer), answer.failure.attempts_remaining, answer.failure.cognito_error)
                    )
        finally:
            emulator.clear_faults()
    assert answers["hers"] == answers["stranger's"], answers
    assert answers["hers"] == [
        ("failure", INVALID, 2, ""),
        ("failure", INVALID, 1, ""),
        ("failure", EXHAUSTED, 0, ""),
    ]
    # As in tests/service/test_enumeration.py: medians within a quarter of the real one.
    hers, strangers = statistics.median(seconds["hers"]), statistics.median(seconds["stranger's"])
    assert strangers > 0.15 and abs(hers - strangers) <= 0.25 * strangers, seconds


@pytest.mark.parametrize("decoy_first", [True, False], ids=["decoy-before-any-code", "decoy-after-a-code"])
def test_decoys_through_an_alias_leave_the_users_send_budget_whole(
    connections: Connections, emulator: Emulator, store_settings: dict[str, str], decoy_first: bool
) -> None:
    # On a pool that sends by email only, an SMS through her email is answered with a decoy (no phone
    # channel). Such a decoy used to map her email to a user of its own in the store, so once her send budget
    # was spent through her phone number (codes by email), Generates through her email were checked against
    # that user's budget, not hers: a flood of them delivered codes past send_limit.
    person = new_person(emulator, connections.email_only_pool)

    def generate(identifier: str, channel: str = "EMAIL") -> Any:
        return journeys.generate(identifier, channel=channel, connection="email-only")[0]

    with fresh_journeys(connections.path, emulator, **store_settings) as journeys:
        # The decoy comes before any code went out through her email, or after one did (the store then knows
        # whom her email reaches). Either way it counts as a send of hers, as a real code would.
        if decoy_first:
            answers = [generate(person.email, "SMS")]
        else:
            answers = [generate(person.email), generate(person.email, "SMS")]
        while len(emulator.outbox(person.email)) < SEND_LIMIT - 1:  # the rest of her budget, by phone number
            answers.append(generate(person.phone))
            assert len(answers) < 20, [_shown(a) for a in answers]
        # As many Generates through her email at once as its own budget (per identifier) still allows, with
        # Cognito as slow as on AWS: each is under way before Cognito answered any of them.
        emulator.inject(operation="InitiateAuth", latency_ms=200, count=4)
        try:
            with ThreadPoolExecutor(max_workers=4) as pool:
                answers += pool.map(lambda _: generate(person.email), range(4))
        finally:
            emulator.clear_faults()
        delivered = len(emulator.outbox(person.email))
    assert [_shown(answer) for answer in answers] == [("success", 0)] * len(answers)
    # Before, 9 codes reached her: the flood was checked against a budget that was not hers.
    assert delivered <= SEND_LIMIT, delivered
