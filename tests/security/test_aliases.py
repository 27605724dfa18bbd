"""Aliases of one Cognito user share one send budget and one lockout, however an attacker spreads the load,
and what one alias spent does not show through another.

The demo pool signs `ada` in by her verified email or her verified phone number: two identifiers, one inbox
and one phone. Counters per identifier alone gave her two budgets and two lockouts; the service also counts
per user (the username Cognito's challenge names), in both stores. A refusal earned through another alias
answers as a sent code (nothing is sent), so it cannot link the aliases.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cognito_emulator.connections_file import write_connections_file
from harness import Emulator, Journeys, connection_tables, fresh_journeys, wrong_code
from otp_step_client import Step, StepExecutorError
from otp_step_service.steps.challenges import MAX_UNRESOLVED_SENDS
from stepexecutor.v1 import step_executor_pb2 as pb

EMAIL, PHONE = "ada@example.com", "+15555550100"  # one user: ada
STRANGER = "+15555550142"  # a number no user has
ALIASES = ((EMAIL, "EMAIL"), (PHONE, "SMS"))
JUDGED = (pb.FAILURE_CODE_INVALID_CODE, pb.FAILURE_CODE_ATTEMPTS_EXHAUSTED)


@pytest.fixture(scope="module")
def connections(connections_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite's "budget" (send_limit 10 per 900 s) and "lockout" (4 wrong codes) connections alone."""
    path = tmp_path_factory.mktemp("aliases") / "connections.toml"
    return write_connections_file(path, connection_tables(connections_file, "budget", "lockout"))


@contextlib.contextmanager
def _service(connections: Path, emulator: Emulator, store_settings: dict[str, str]) -> Iterator[Journeys]:
    with fresh_journeys(connections, emulator, **store_settings) as journeys:
        yield journeys


def _delivered(emulator: Emulator) -> int:
    return len(emulator.outbox(EMAIL)) + len(emulator.outbox(PHONE))


def test_codes_through_both_aliases_stay_within_one_send_budget(
    connections: Path, emulator: Emulator, store_settings: dict[str, str]
) -> None:
    # Connection "budget": send_limit = 10 per 900 s. Eight Generates through each alias, each in a new
    # journey (no cooldown between them): 16 codes to one person when counted per identifier.
    with _service(connections, emulator, store_settings) as journeys:
        before = _delivered(emulator)
        answers = []
        for identifier, channel in ALIASES:
            for _ in range(8):
                sent, _ = journeys.generate(identifier, channel=channel, connection="budget")
                answers.append(sent.failure.code if sent.HasField("failure") else "SENT")
        delivered = _delivered(emulator) - before
    assert delivered == 10, answers
    # The refusals beyond the budget came through the phone alias, earned by the email's sends: they answer
    # as sent codes (nothing sent), or they would tell that the phone reaches the email's owner.
    assert answers == ["SENT"] * 16, answers


def test_a_flood_through_a_fresh_alias_cannot_race_past_the_users_budget(
    connections: Path, emulator: Emulator, store_settings: dict[str, str]
) -> None:
    # Nine codes by email, then twelve concurrent Generates by SMS: the phone alias is new to the store, so
    # which user it reaches is known only once Cognito names her; until then it sends one code at a time.
    with _service(connections, emulator, store_settings) as journeys:
        before = _delivered(emulator)
        for _ in range(9):
            sent, _ = journeys.generate(EMAIL, connection="budget")
            assert sent.WhichOneof("outcome") == "success"
        with ThreadPoolExecutor(max_workers=12) as pool:
            flood = list(
                pool.map(lambda _: journeys.generate(PHONE, channel="SMS", connection="budget")[0], range(12))
            )
        delivered = _delivered(emulator) - before
    assert delivered == 10, [r.failure.code for r in flood]
    # While the alias's first code is on its way the others wait (the alias's own cooldown); once its user
    # is known, the user's spent budget answers as sent codes that go nowhere.
    assert {r.failure.code for r in flood if r.HasField("failure")} <= {pb.FAILURE_CODE_RESEND_TOO_SOON}


def test_wrong_codes_through_both_aliases_stay_within_one_lockout(
    connections: Path, emulator: Emulator, store_settings: dict[str, str]
) -> None:
    # Connection "lockout": lockout_threshold = 4. Three wrong codes by email use up one challenge; a fresh
    # challenge by SMS gets just one more judged: then she is locked, and not even the right code is judged.
    with _service(connections, emulator, store_settings) as journeys:
        before = len(emulator.outbox(EMAIL))
        sent, journey = journeys.generate(EMAIL, connection="lockout")
        code = emulator.latest_code(EMAIL, after=before)
        answers = [
            journeys.validate(journey, EMAIL, wrong_code(code), connection="lockout") for _ in range(3)
        ]
        before = len(emulator.outbox(PHONE))
        sent, journey = journeys.generate(PHONE, channel="SMS", connection="lockout")
        assert sent.WhichOneof("outcome") == "success", sent
        code = emulator.latest_code(PHONE, after=before)
        answers += [
            journeys.validate(journey, PHONE, typed, connection="lockout")
            for typed in (wrong_code(code), code)
        ]
        # Neither identifier earned the lock alone (3 and 1 of 4 wrong codes), so through the phone it answers
        # as wrong codes do (the right one too: nothing judges it), and both aliases' Generates as sent codes
        # that go nowhere: the lock is the user's, and saying so through one alias would tell what the other
        # did.
        assert [(a.failure.code, a.failure.attempts_remaining) for a in answers] == [
            (pb.FAILURE_CODE_INVALID_CODE, 2),
            (pb.FAILURE_CODE_INVALID_CODE, 1),
            (pb.FAILURE_CODE_ATTEMPTS_EXHAUSTED, 0),
            (pb.FAILURE_CODE_INVALID_CODE, 2),
            (pb.FAILURE_CODE_INVALID_CODE, 1),
        ]
        before = _delivered(emulator)
        for identifier, channel in ALIASES:
            again, _ = journeys.generate(identifier, channel=channel, connection="lockout")
            assert again.WhichOneof("outcome") == "success", again
        assert _delivered(emulator) == before


def test_a_right_code_is_not_counted_against_the_user(
    connections: Path, emulator: Emulator, store_settings: dict[str, str]
) -> None:
    # Every attempt is counted as wrong before Cognito judges it; a right code gives its count back, on the
    # user's counter as on the identifier's. One wrong and one right code by email leave the user at 1 of
    # the threshold (4): two wrong codes by SMS bring her to 3, and the right one after them still signs in
    # (counted, the right code by email would have locked her: a locked user's codes are not judged).
    with _service(connections, emulator, store_settings) as journeys:
        before = len(emulator.outbox(EMAIL))
        sent, journey = journeys.generate(EMAIL, connection="lockout")
        code = emulator.latest_code(EMAIL, after=before)
        assert (
            journeys.validate(journey, EMAIL, wrong_code(code), connection="lockout").failure.code in JUDGED
        )
        assert (
            journeys.validate(journey, EMAIL, code, connection="lockout").WhichOneof("outcome") == "success"
        )
        before = len(emulator.outbox(PHONE))
        sent, journey = journeys.generate(PHONE, channel="SMS", connection="lockout")
        assert sent.WhichOneof("outcome") == "success", sent
        code = emulator.latest_code(PHONE, after=before)
        answers = [
            journeys.validate(journey, PHONE, typed, connection="lockout")
            for typed in (wrong_code(code),) * 2
        ]
        right = journeys.validate(journey, PHONE, code, connection="lockout")
    assert [a.failure.code for a in answers] == [pb.FAILURE_CODE_INVALID_CODE] * 2
    assert right.WhichOneof("outcome") == "success", right


def _settled_count(emulator: Emulator, destination: str, quiet_seconds: float = 0.8) -> int:
    """The outbox's size once no message has arrived for `quiet_seconds` (delayed sends land late)."""
    deadline = time.monotonic() + 10
    count, since = len(emulator.outbox(destination)), time.monotonic()
    while time.monotonic() - since < quiet_seconds and time.monotonic() < deadline:
        time.sleep(0.05)
        now = len(emulator.outbox(destination))
        if now != count:
            count, since = now, time.monotonic()
    return count


def test_answers_lost_on_purpose_through_a_fresh_alias_open_no_second_budget(
    connections: Path, emulator: Emulator, store_settings: dict[str, str]
) -> None:
    # The user's budget (10) is spent by email. Then the phone alias, new to the store, with InitiateAuth
    # slowed to 400 ms and 0.3 s deadlines: Cognito sends each code, but no answer ever names the user, so
    # none can be counted for her. After MAX_UNRESOLVED_SENDS such codes the alias waits for its window.
    with _service(connections, emulator, store_settings) as journeys:
        for _ in range(10):
            sent, _ = journeys.generate(EMAIL, connection="budget")
            assert sent.WhichOneof("outcome") == "success"
        before = len(emulator.outbox(PHONE))
        emulator.inject(operation="InitiateAuth", latency_ms=400, count=6)
        answers = []
        try:
            for _ in range(6):
                try:
                    sent = journeys.client.generate_otp(
                        journeys.journey(), Step("budget", PHONE, channel="SMS"), timeout=0.3
                    )
                    answers.append(
                        pb.FailureCode.Name(sent.failure.code) if sent.HasField("failure") else "SENT"
                    )
                except StepExecutorError as exc:
                    answers.append(exc.code.name)
        finally:
            emulator.clear_faults()
        lost = _settled_count(emulator, PHONE) - before
        later, _ = journeys.generate(PHONE, channel="SMS", connection="budget")
    assert lost == MAX_UNRESOLVED_SENDS, answers
    assert answers[MAX_UNRESOLVED_SENDS:] == ["FAILURE_CODE_RESEND_TOO_SOON"] * (6 - MAX_UNRESOLVED_SENDS)
    assert later.failure.code == pb.FAILURE_CODE_RESEND_TOO_SOON  # no fault now, still held: nothing sent
    assert len(emulator.outbox(PHONE)) - before == lost


def _answers(journeys: Journeys, identifier: str, connection: str) -> list[tuple[str, int, int]]:
    """Two Generates through `identifier` by SMS, and a wrong code at the second's challenge: what shows."""
    shown = []
    for _ in range(2):
        sent, journey = journeys.generate(identifier, channel="SMS", connection=connection)
        shown.append((sent.WhichOneof("outcome") or "", sent.failure.code, sent.success.max_attempts))
    judged = journeys.validate(journey, identifier, "12345678", connection=connection)
    shown.append((judged.WhichOneof("outcome") or "", judged.failure.code, judged.failure.attempts_remaining))
    return shown


@pytest.mark.parametrize("spent", ["send budget", "lockout"])
def test_what_one_alias_spent_does_not_show_through_another(
    connections: Path, emulator: Emulator, store_settings: dict[str, str], spent: str
) -> None:
    # The attack: spend ada's send budget (or lock her out) through her email, then Generate twice through a
    # phone number. Her phone used to answer SUCCESS, RESEND_TOO_SOON (or SUCCESS, IDENTIFIER_LOCKED), any
    # other number SUCCESS, SUCCESS: a link from the email to her number without any code.
    connection = "budget" if spent == "send budget" else "lockout"
    with _service(connections, emulator, store_settings) as journeys:
        if spent == "send budget":
            for _ in range(10):
                assert journeys.generate(EMAIL, connection=connection)[0].WhichOneof("outcome") == "success"
        else:
            for _ in range(2):  # two challenges of three attempts: four wrong codes lock her out
                before = len(emulator.outbox(EMAIL))
                _, journey = journeys.generate(EMAIL, connection=connection)
                code = emulator.latest_code(EMAIL, after=before)
                for _ in range(2):
                    journeys.validate(journey, EMAIL, wrong_code(code), connection=connection)
        phone_before = len(emulator.outbox(PHONE))
        hers, stranger = _answers(journeys, PHONE, connection), _answers(journeys, STRANGER, connection)
        settled = _settled_count(emulator, PHONE)
    assert hers == stranger, (hers, stranger)
    assert hers[0][0] == hers[1][0] == "success"
    # The bound that remains: the store learns which user a fresh alias reaches from Cognito's answer to its
    # first code, so that one code still goes out (and counts for her); none after it.
    assert settled - phone_before <= 1
