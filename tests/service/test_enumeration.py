"""An outsider cannot tell an unknown user from a real one: same fields, masks, expiries, attempts and timing."""

from __future__ import annotations

import hashlib
import re
import statistics
import time
import uuid
from datetime import UTC, datetime

from harness import Emulator, Journeys, new_person, wrong_code
from otp_step_service.steps.latency import CognitoLatency
from stepexecutor.v1 import step_executor_pb2 as pb


def _quartiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def test_a_decoys_wrong_codes_look_and_take_as_long_as_a_real_users(
    journeys: Journeys, emulator: Emulator
) -> None:
    # "legacy-timing": a pool that reports unknown users (LEGACY), so the service answers them with its own
    # decoy, judged without a Cognito call. 36 wrong codes each, interleaved.
    real: list[float] = []
    decoy: list[float] = []
    real_answers: list[tuple[int, int, str]] = []
    decoy_answers: list[tuple[int, int, str]] = []
    # Cognito's judgement takes 50 ms more, as a round trip to AWS does (100+ ms): a quarter of the real
    # median is then ~15 ms, several times a loaded machine's scheduling jitter, where the emulator's bare
    # ~8 ms left 4 ms. An immediate answer (~1 ms) stays far outside it either way.
    emulator.inject(operation="RespondToAuthChallenge", latency_ms=50)
    # Warm-up, not measured: the connection's first Cognito calls open its HTTP connections, and the decoy
    # replays the judgements it has seen, so a cold first one would be replayed to the first decoys.
    before = len(emulator.outbox("grace@example.com"))
    _, warm = journeys.generate("grace@example.com", connection="legacy-timing")
    warm_code = emulator.latest_code("grace@example.com", after=before)
    for _ in range(3):
        journeys.validate(warm, "grace@example.com", wrong_code(warm_code), connection="legacy-timing")
    for _ in range(12):
        before = len(emulator.outbox("grace@example.com"))
        _, known = journeys.generate("grace@example.com", connection="legacy-timing")
        code = emulator.latest_code("grace@example.com", after=before)
        _, unknown = journeys.generate("nobody@example.com", connection="legacy-timing")
        for _ in range(3):
            for journey, identifier, times, answers, typed in (
                (known, "grace@example.com", real, real_answers, wrong_code(code)),
                (unknown, "nobody@example.com", decoy, decoy_answers, "12345678"),
            ):
                started = time.perf_counter()
                answer = journeys.validate(journey, identifier, typed, connection="legacy-timing")
                times.append(time.perf_counter() - started)
                answers.append(
                    (answer.failure.code, answer.failure.attempts_remaining, answer.failure.cognito_error)
                )
    assert real_answers == decoy_answers  # the same fields, attempt after attempt
    assert {a[0] for a in real_answers} == {pb.FAILURE_CODE_INVALID_CODE, pb.FAILURE_CODE_ATTEMPTS_EXHAUSTED}
    real_median, decoy_median = statistics.median(real), statistics.median(decoy)
    # A quarter of the real median, at least 4 ms: an immediate answer stays outside it.
    assert abs(decoy_median - real_median) <= max(0.25 * real_median, 0.004), (real_median, decoy_median)
    (real_low, real_high), (decoy_low, decoy_high) = _quartiles(real), _quartiles(decoy)
    assert real_low <= decoy_high and decoy_low <= real_high, (real_low, real_high, decoy_low, decoy_high)


def _unkeyed_prediction(identifier: str) -> str:
    """What anyone could compute from the identifier alone, had decoy masks been an unkeyed digest of it."""
    digest = int(hashlib.sha256(identifier.encode()).hexdigest(), 16)
    return f"+*******{digest % 10000:04d}"


def test_a_cross_channel_decoys_mask_cannot_be_computed_and_looks_like_a_real_one(journeys: Journeys) -> None:
    # The attack: an email identifier asked to send by SMS. On "demo" (a pool that hides unknown users) and
    # "legacy-protected" (the service's own decoys), grace has no phone and nobody does not exist: both get a
    # decoy. A prediction computed offline used to match each of them, and no real mask ever does.
    shown = {}
    for connection in ("demo", "legacy-protected"):
        for identifier in ("grace@example.com", "nobody@example.com", "nobody.else@example.org"):
            masks = [
                journeys.generate(identifier, channel="SMS", connection=connection)[
                    0
                ].success.masked_destination
                for _ in range(2)
            ]
            shown[connection, identifier] = masks
    for (connection, identifier), masks in shown.items():
        assert masks[0] == masks[1], (connection, identifier, masks)  # stable, as a real user's
        assert re.fullmatch(r"\+\*{7}[0-9]{4}", masks[0]), masks  # a US number's shape (default region)
    # Four uniform digits match the unkeyed prediction for one identifier 1 time in 10,000 by chance; the
    # unkeyed decoys matched it for every identifier.
    predicted = {
        identifier for (_, identifier), masks in shown.items() if masks[0] == _unkeyed_prediction(identifier)
    }
    assert len(predicted) <= 1, predicted


def _expiry_lead(journeys: Journeys, identifier: str) -> float:
    """Seconds from receiving a Generate's answer to the expiry it names."""
    sent, _ = journeys.generate(identifier, connection="legacy-protected")
    received = datetime.now(UTC)
    return (sent.success.expires_at.ToDatetime(UTC) - received).total_seconds()


def test_a_decoys_expiry_does_not_show_cognitos_round_trip(journeys: Journeys, emulator: Emulator) -> None:
    # With 150 ms added to InitiateAuth, a decoy's expires_at used to be taken before the call and a real
    # challenge's after it: 179.998 s against 179.844 s from the answer. One clock point for both now.
    emulator.inject(operation="InitiateAuth", latency_ms=150)
    try:
        real, decoy = [], []
        for _ in range(8):
            real.append(_expiry_lead(journeys, "grace@example.com"))
            decoy.append(_expiry_lead(journeys, "nobody@example.com"))
    finally:
        emulator.clear_faults()
    # Each lead is the session validity less the time the answer took to arrive; a loaded machine moves
    # both alike. 150 ms of Cognito latency would show as a 0.15 s gap.
    gap = abs(statistics.median(decoy) - statistics.median(real))
    assert gap < 0.06, (statistics.median(real), statistics.median(decoy))


def _wrong_code_seconds(journeys: Journeys, emulator: Emulator, identifier: str, typed: str | None) -> float:
    """How long one wrong code at a fresh challenge takes (`typed` None: a wrong variant of the real code)."""
    before = len(emulator.outbox(identifier)) if typed is None else 0
    _, journey = journeys.generate(identifier, connection="legacy-timing")
    code = wrong_code(emulator.latest_code(identifier, after=before)) if typed is None else typed
    started = time.perf_counter()
    journeys.validate(journey, identifier, code, connection="legacy-timing")
    return time.perf_counter() - started


def test_decoy_timing_follows_when_cognitos_latency_rises(journeys: Journeys, emulator: Emulator) -> None:
    # The attack: Cognito's judgements get 150 ms slower. Decoys that replayed the last 256 judgements, with
    # no time window, kept answering in ~6 ms while real users took ~157 ms.
    for _ in range(30):  # 90 judgements before the change (ada's: each user's lockout stays far off)
        before = len(emulator.outbox("ada@example.com"))
        _, journey = journeys.generate("ada@example.com", connection="legacy-timing")
        code = wrong_code(emulator.latest_code("ada@example.com", after=before))
        for _ in range(3):
            journeys.validate(journey, "ada@example.com", code, connection="legacy-timing")
    emulator.inject(operation="RespondToAuthChallenge", latency_ms=150)
    try:
        for _ in range(16):  # real traffic goes on at the new latency
            _wrong_code_seconds(journeys, emulator, "grace@example.com", None)
        real, decoy = [], []
        for _ in range(8):
            real.append(_wrong_code_seconds(journeys, emulator, "grace@example.com", None))
            decoy.append(_wrong_code_seconds(journeys, emulator, "nobody@example.com", "12345678"))
    finally:
        emulator.clear_faults()
    real_median, decoy_median = statistics.median(real), statistics.median(decoy)
    assert real_median > 0.15  # the change took effect
    assert abs(decoy_median - real_median) <= 0.25 * real_median, (real_median, decoy_median)


def test_a_decoy_for_an_unknown_user_takes_as_long_as_a_real_send(
    journeys: Journeys, emulator: Emulator
) -> None:
    # Cognito says "no such user" at once, while sending a code takes it longer (on AWS the message is handed
    # to SES or SNS). Here each real send gets 150 ms more (a fault on the next InitiateAuth only). A decoy
    # answered as soon as Cognito said "no such user" (LEGACY, "legacy-timing") took ~5 ms against ~155 ms.
    email, unknown = new_person(emulator).email, f"nobody-{uuid.uuid4().hex[:12]}@example.com"

    def seconds(identifier: str, slow: bool) -> float:
        if slow:
            emulator.inject(operation="InitiateAuth", latency_ms=150, count=1)
        started = time.perf_counter()
        sent, _ = journeys.generate(identifier, connection="legacy-timing")
        took = time.perf_counter() - started
        assert sent.WhichOneof("outcome") == "success", sent
        return took

    for _ in range(CognitoLatency.RECENT):  # decoys wait as long as one of the latest real sends took
        seconds(email, slow=True)
    real, decoy = [], []
    for _ in range(8):
        real.append(seconds(email, slow=True))
        decoy.append(seconds(unknown, slow=False))
    real_median, decoy_median = statistics.median(real), statistics.median(decoy)
    assert real_median > 0.15  # the latency took effect
    assert abs(decoy_median - real_median) <= max(0.25 * real_median, 0.004), (real_median, decoy_median)
