"""An outsider cannot tell an unknown user from a real one at Validate: same fields, same attempts, same timing."""

from __future__ import annotations

import statistics
import time

from harness import Emulator, Journeys, wrong_code
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
    assert abs(decoy_median - real_median) <= 0.25 * real_median, (real_median, decoy_median)
    (real_low, real_high), (decoy_low, decoy_high) = _quartiles(real), _quartiles(decoy)
    assert real_low <= decoy_high and decoy_low <= real_high, (real_low, real_high, decoy_low, decoy_high)
