"""A refusal one alias earned never shows through another, whatever state the other alias is in.

The attacker holds two identifiers and wants to know whether they reach one person: it spends the person's
budget or locks them out through one (an email), then watches what the other (a phone number) answers, next
to what a number nobody has answers to the same calls. Every person here is new to the pool and to the store
(fresh users per run); the service is a real one on a real port, with its store in memory or on Redis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from cognito_emulator.connections_file import write_connections_file, write_secret_file
from harness import Emulator, Journeys, Person, fresh_journeys, new_person, unused_number, wrong_code
from otp_step_client import Journey
from stepexecutor.v1 import step_executor_pb2 as pb

INVALID, EXHAUSTED = pb.FAILURE_CODE_INVALID_CODE, pb.FAILURE_CODE_ATTEMPTS_EXHAUSTED


@pytest.fixture(scope="module")
def connections(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's connections file (a service with few connections starts in a fraction of a second):
    "lockout" on the demo pool (4 wrong codes lock a user out, a 30 s cooldown)."""
    folder = tmp_path_factory.mktemp("alias-linkage")
    seed = emulator.seed
    return write_connections_file(
        folder / "connections.toml",
        {
            "lockout": {
                "region": seed.region,
                "endpoint_url": seed.endpoint_url,
                "user_pool_id": seed.user_pool_id,
                "client_id": seed.client_id,
                "client_secret_file": write_secret_file(folder / "demo.secret", seed.client_secret),
                "lockout_threshold": 4,
                "lockout_window_seconds": 60,
            },
        },
    )


@pytest.fixture(params=["memory", "redis"])
def store_settings(request: pytest.FixtureRequest) -> dict[str, str]:
    """The service's challenge store: in memory, or a real Redis (the Lua scripts)."""
    if request.param == "memory":
        return {}
    url = request.getfixturevalue("redis_url")
    redis.Redis.from_url(url).flushdb()
    return {"challenge_store": url, "challenge_keys_file": str(request.getfixturevalue("keys_file"))}


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
    connections: Path, emulator: Emulator, store_settings: dict[str, str]
) -> None:
    # Generate through her phone in a journey, lock her out through her email, then, in that same journey,
    # Generate again within the cooldown and retry the first execution. Alone, a phone number answers
    # RESEND_TOO_SOON and the replay of its first answer; hers used to answer IDENTIFIER_LOCKED to both.
    with fresh_journeys(connections, emulator, **store_settings) as journeys:
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
    connections: Path, emulator: Emulator, store_settings: dict[str, str]
) -> None:
    # A challenge through her phone, then she is locked out through her email; then codes at the phone's
    # challenge: the right one first. A stranger's number gets INVALID_CODE, INVALID_CODE, ATTEMPTS_EXHAUSTED;
    # hers used to answer IDENTIFIER_LOCKED. Now as a stranger's, and the right code signs nobody in: no code
    # is judged while she is locked.
    with fresh_journeys(connections, emulator, **store_settings) as journeys:
        person = new_person(emulator)
        phones = {"hers": person.phone, "stranger's": unused_number()}
        journeys_of = {who: journeys.journey() for who in phones}
        for who, phone in phones.items():
            assert _shown(_generate(journeys, phone, journeys_of[who])) == ("success", 0)
        code = emulator.latest_code(person.phone)
        _lock_out(journeys, emulator, person)
        answers = {}
        for who, phone in phones.items():
            typed = [code, wrong_code(code), wrong_code(code)]
            answers[who] = [
                (*_shown(answer), answer.failure.attempts_remaining, answer.failure.cognito_error)
                for answer in (
                    journeys.validate(journeys_of[who], phone, each, connection="lockout") for each in typed
                )
            ]
    assert answers["hers"] == answers["stranger's"], answers
    assert answers["hers"] == [
        ("failure", INVALID, 2, ""),
        ("failure", INVALID, 1, ""),
        ("failure", EXHAUSTED, 0, ""),
    ]
