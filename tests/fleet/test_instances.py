"""Three service processes sharing one Redis, behind clients using the shipped service config: calls spread
over all of them and their connections are recycled without failing a call, a journey begun on one goes on on
another, the limits are exact when concurrent calls land on different processes, and a process killed with
SIGKILL under load loses no journey (its sends in flight stay counted, and each gets one more code from the
retry that takes its reservation over)."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from harness import (
    Emulator,
    Journeys,
    connections_subset,
    free_port,
    kill_process,
    start_service_process,
    stop_process,
    wrong_code,
)
from otp_step_client import Journey, Step, StepExecutorClient, StepExecutorError
from prometheus_client.parser import text_string_to_metric_families
from stepexecutor.v1 import step_executor_pb2 as pb

from .emulated_pool import new_users


@dataclass
class Instance:
    """One `otp_step_service serve` process, on a port of its own."""

    name: str
    port: int
    metrics_port: int
    env: dict[str, str]
    connections_file: Path
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    def start(self) -> Instance:
        log = self.folder / f"{self.name}-{len(self.logs)}.log"
        env = {**self.env, "OTP_STEP_METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}"}
        self.process, _ = start_service_process(
            self.connections_file, log, env, listen=f"127.0.0.1:{self.port}"
        )
        self.logs.append(log)
        return self

    def kill(self) -> None:
        """SIGKILL: no drain, no settle, connections reset."""
        assert self.process is not None
        kill_process(self.process)

    def stop(self) -> None:
        stop_process(self.process)

    def records(self, message: str) -> list[dict[str, Any]]:
        """This instance's log records (every run of it) with `message`; a line cut by SIGKILL is skipped."""
        found = []
        for log in self.logs:
            for line in log.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("message", "").startswith(message):
                    found.append(record)
        return found

    def steps_in_flight(self) -> float:
        """The process's otp_steps_in_flight gauge, scraped."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "otp_steps_in_flight":
                    return float(sample.value)
        raise AssertionError("no otp_steps_in_flight gauge")


# The connections these tests use: the fleet's processes get only these (see `connections_subset`).
FLEET_CONNECTIONS = ("demo", "resend", "send-cap")


@pytest.fixture(scope="module")
def fleet(
    connections_file: Path, redis_url: str, keys_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Instance]]:
    env = {
        "OTP_STEP_CHALLENGE_STORE": redis_url,
        "OTP_STEP_CHALLENGE_KEYS_FILE": str(keys_file),
        "OTP_STEP_SELF_TEST": "off",
        # Every connection recycled each second under the journeys below; the grace outlasts any step (a
        # step cut by it counts its send as maybe made, as a cancelled call does).
        "OTP_STEP_MAX_CONNECTION_AGE_SECONDS": "1",
        "OTP_STEP_MAX_CONNECTION_AGE_GRACE_SECONDS": "10",
        "OTP_STEP_GRACE_SECONDS": "2",
    }
    folder = tmp_path_factory.mktemp("fleet")
    subset = connections_subset(connections_file, folder / "connections.toml", FLEET_CONNECTIONS)
    instances = [Instance(f"s{i}", free_port(), free_port(), env, subset, folder) for i in range(3)]
    try:
        with ThreadPoolExecutor(3) as starting:  # side by side: each start waits for its port line
            list(starting.map(Instance.start, instances))
        yield instances
    finally:
        with ThreadPoolExecutor(3) as stopping:
            list(stopping.map(Instance.stop, instances))


def _target(fleet: list[Instance]) -> str:
    return "ipv4:" + ",".join(f"127.0.0.1:{i.port}" for i in fleet)


def _generates(instance: Instance) -> int:
    return sum(1 for r in instance.records("step.completed") if r.get("step_type") == "cognito_otp_generate")


def test_journeys_spread_over_three_processes_and_survive_connection_recycling(
    fleet: list[Instance], emulator: Emulator
) -> None:
    before = [_generates(i) for i in fleet]
    with StepExecutorClient(_target(fleet), timeout=10) as client:
        journeys = Journeys(client, emulator)
        started = time.monotonic()
        done = 0
        # Past two connection ages: every connection is recycled at least once while journeys run.
        while done < 9 or time.monotonic() - started < 2.5:
            assert time.monotonic() - started < 60, "bounded in time"  # a fast machine does many journeys
            email = ("ada", "grace")[done % 2] + "@example.com"
            count = len(emulator.outbox(email))
            sent, journey = journeys.generate(email)
            assert sent.WhichOneof("outcome") == "success", sent
            code = emulator.latest_code(email, after=count)
            assert journeys.validate(journey, email, code).WhichOneof("outcome") == "success"
            done += 1
    generated = [_generates(i) - n for i, n in zip(fleet, before, strict=True)]
    assert all(generated), f"round_robin reached every process: {generated}"


def _on(fleet: list[Instance], emulator: Emulator) -> list[Journeys]:
    """A client per process: each call lands where the test says."""
    return [Journeys(StepExecutorClient(f"127.0.0.1:{i.port}", timeout=10), emulator) for i in fleet]


def test_generate_validate_and_resend_on_three_processes(fleet: list[Instance], emulator: Emulator) -> None:
    on = _on(fleet, emulator)
    try:
        email = "ada@example.com"
        journey = on[0].journey()
        count = len(emulator.outbox(email))
        sent, _ = on[0].generate(email, connection="resend", journey=journey)  # Generate on the first...
        assert sent.WhichOneof("outcome") == "success", sent
        first = emulator.latest_code(email, after=count)
        wrong = on[1].validate(
            journey, email, wrong_code(first), connection="resend"
        )  # ...Validate on the second
        assert (wrong.failure.code, wrong.failure.attempts_remaining) == (pb.FAILURE_CODE_INVALID_CODE, 2)
        # The resend on the third: the cooldown the first process started holds there...
        soon, _ = on[2].generate(email, connection="resend", journey=journey)
        assert (soon.failure.code, soon.failure.retry_after_seconds) == (pb.FAILURE_CODE_RESEND_TOO_SOON, 1)
        assert len(emulator.outbox(email)) == count + 1
        # ...and once it has passed, a new code goes out (polled: each early ask sends nothing).
        deadline = time.monotonic() + 10
        while (resent := on[2].generate(email, connection="resend", journey=journey)[0]).HasField("failure"):
            assert resent.failure.code == pb.FAILURE_CODE_RESEND_TOO_SOON and time.monotonic() < deadline
            time.sleep(0.1)
        assert len(emulator.outbox(email)) == count + 2
        second = emulator.latest_code(email, after=count + 1)
        # The old code no longer works (the new challenge has its own attempts); the new one does.
        old = on[0].validate(journey, email, first, connection="resend")
        if first != second:
            assert (old.failure.code, old.failure.attempts_remaining) == (pb.FAILURE_CODE_INVALID_CODE, 2)
        assert on[1].validate(journey, email, second, connection="resend").WhichOneof("outcome") == "success"
        gone = on[2].validate(journey, email, second, connection="resend")
        assert gone.failure.code == pb.FAILURE_CODE_CHALLENGE_NOT_FOUND
    finally:
        for journeys in on:
            journeys.client.close()


def test_concurrent_wrong_codes_over_three_processes_get_exactly_the_attempts(
    fleet: list[Instance], emulator: Emulator
) -> None:
    on = _on(fleet, emulator)
    try:
        email = "grace@example.com"
        count = len(emulator.outbox(email))
        sent, journey = on[0].generate(email)  # Generate on one process...
        assert sent.WhichOneof("outcome") == "success", sent
        wrong = wrong_code(emulator.latest_code(email, after=count))
        with ThreadPoolExecutor(9) as pool:  # ...nine wrong codes at once on all three
            answers = list(pool.map(lambda i: on[i % 3].validate(journey, email, wrong), range(9)))
        judged = sorted(
            a.failure.attempts_remaining for a in answers if a.failure.code == pb.FAILURE_CODE_INVALID_CODE
        )
        others = Counter(
            pb.FailureCode.Name(a.failure.code)
            for a in answers
            if a.failure.code != pb.FAILURE_CODE_INVALID_CODE
        )
        # Three attempts, each spent once fleet-wide: two answered "wrong code, N left", the last one
        # "attempts exhausted"; every other call found the challenge spent or gone.
        assert judged == [1, 2], (judged, others)
        assert others["FAILURE_CODE_ATTEMPTS_EXHAUSTED"] >= 1, others
        assert set(others) <= {"FAILURE_CODE_ATTEMPTS_EXHAUSTED", "FAILURE_CODE_CHALLENGE_NOT_FOUND"}, others
    finally:
        for journeys in on:
            journeys.client.close()


def test_concurrent_sends_over_three_processes_stop_at_the_send_budget(
    fleet: list[Instance], emulator: Emulator, redis_url: str
) -> None:
    redis.Redis.from_url(redis_url).flushdb()  # this test's counters start at zero
    on = _on(fleet, emulator)
    try:
        email = "ada@example.com"
        count = len(emulator.outbox(email))
        # The first code names the identifier's Cognito user (until then its codes go out one at a time).
        assert on[0].generate(email, connection="send-cap")[0].WhichOneof("outcome") == "success"
        with ThreadPoolExecutor(7) as pool:  # the connection's cap: 2 codes per identifier a minute
            answers = list(pool.map(lambda i: on[i % 3].generate(email, connection="send-cap")[0], range(7)))
        kinds = Counter(
            "ok" if a.WhichOneof("outcome") == "success" else pb.FailureCode.Name(a.failure.code)
            for a in answers
        )
        # An identifier's own cap answers as a resend that must wait (the window's end), not a budget.
        assert kinds == {"ok": 1, "FAILURE_CODE_RESEND_TOO_SOON": 6}, kinds
        assert all(
            "more than 2 codes" in a.failure.message for a in answers if a.WhichOneof("outcome") != "success"
        )
        assert len(emulator.outbox(email)) - count == 2
    finally:
        for journeys in on:
            journeys.client.close()


# --- kill -9 under load ---------------------------------------------------------------------------------------

JOURNEYS = 27
THREADS = 9
# Journeys whose first Generate goes to the victim itself, so it surely dies with sends in flight.
PINNED = 3
# Every InitiateAuth is this slow at the emulator: sends are in flight on each process at any moment.
SEND_DELAY_MS = 700
# The client's deadline per call, so the lease of a send lost with its process ends this long after it began.
CALL_SECONDS = 4.0


@dataclass
class Run:
    """One journey of the load, as its driver saw it."""

    email: str
    run_id: str = field(default_factory=lambda: f"kill-{uuid.uuid4().hex[:8]}")
    started: float = 0.0
    generated: float = 0.0
    refusals: list[str] = field(default_factory=list)
    resends: int = 0


def _drive(
    client: StepExecutorClient, emulator: Emulator, run: Run, first: StepExecutorClient | None = None
) -> None:
    """A journey as an orchestrator runs it: Generate (the same step execution again while the call fails
    retryably, as told by RetryInfo), then Validate the code; a Validate lost with its process is repeated,
    and a challenge it spent is sent again (a resend, a new step execution). `first`: where the first
    Generate goes (else `client`, as every later call)."""
    journey = Journey("fleet-kill", run_id=run.run_id, step_id="send-code")
    step = Step("resend", run.email, channel="EMAIL")
    run.started = time.monotonic()
    calls = first or client
    for execution in range(3):
        at = journey.at_step("send-code", f"exec-{execution}")
        while True:
            assert time.monotonic() - run.started < 60, (run, "bounded in time")
            try:
                sent = calls.generate_otp(at, step)
            except StepExecutorError as exc:
                if not exc.retryable:
                    raise
                calls = client
                run.refusals.append(exc.reason or exc.code.name)
                time.sleep(min(exc.retry_after or 0.2, 3))  # the backoff the service asked for
                continue
            if sent.failure.code != pb.FAILURE_CODE_RESEND_TOO_SOON:
                break
            time.sleep(sent.failure.retry_after_seconds)  # a resend within the cooldown: as told
        run.generated = run.generated or time.monotonic()
        assert sent.WhichOneof("outcome") == "success", sent
        code = emulator.latest_code(run.email)
        for backoff in (0.1, 0.2, 0.4):
            try:
                checked = client.validate_otp(journey.at_step("check-code"), step, code)
                break
            except StepExecutorError as exc:  # not retried by the service config: the journey decides
                if not exc.retryable:
                    raise
                run.refusals.append(f"validate: {exc}")
                time.sleep(backoff)  # a dead connection may take the channel a moment to notice
        else:
            raise AssertionError(f"no Validate answered: {run}")
        if checked.WhichOneof("outcome") == "success":
            return
        run.resends += 1
    raise AssertionError(f"{run.email}: no journey after three sends: {run}")


def test_a_process_killed_under_load_loses_no_journey_and_each_lost_send_gets_one_more_code(
    fleet: list[Instance], emulator: Emulator, redis_url: str
) -> None:
    from otp_step_service.adapters.redis_store import connection_tag
    from otp_step_service.steps.challenges import ChallengeKey, sends_subject

    runs = [Run(email) for email in new_users(emulator, JOURNEYS + PINNED)]
    load, pinned = runs[:JOURNEYS], runs[JOURNEYS:]
    victim = fleet[1]
    store = redis.Redis.from_url(redis_url)
    reservations = [
        "otp-steps:" + connection_tag("resend") + ChallengeKey("resend", run.run_id, run.email).storage_key()
        for run in pinned
    ]
    emulator.inject(operation="InitiateAuth", latency_ms=SEND_DELAY_MS)
    killed_at = 0.0
    try:
        with (
            StepExecutorClient(_target(fleet), timeout=CALL_SECONDS) as client,
            StepExecutorClient(f"127.0.0.1:{victim.port}", timeout=CALL_SECONDS) as on_victim,
            ThreadPoolExecutor(THREADS + PINNED) as pool,
        ):
            futures = [pool.submit(_drive, client, emulator, run) for run in load]
            deadline = time.monotonic() + 30
            while sum(1 for f in futures if f.done()) < THREADS // 2:  # the load has been running a while
                assert time.monotonic() < deadline, "no journey completes"
                time.sleep(0.02)
            futures += [pool.submit(_drive, client, emulator, run, on_victim) for run in pinned]
            # Killed once the pinned sends are reserved: they are then at the emulator, for its whole delay.
            while store.exists(*reservations) < PINNED:
                assert time.monotonic() < deadline, "the victim reserved no send"
                time.sleep(0.01)
            victim.kill()
            killed_at = time.monotonic()
            for future in futures:
                future.result(timeout=90)
    finally:
        emulator.clear_faults()
    counted = {
        run.email: int(
            store.get("otp-steps:" + connection_tag("resend") + sends_subject("resend", run.email)) or 0
        )
        for run in runs
    }
    codes = {run.email: len(emulator.outbox(run.email)) for run in runs}
    # Every journey completed (each _drive returned). The sends the victim had in flight were never settled:
    # they stay counted (as codes that may have gone out), and the retry that took each over sent one more.
    lost = [run for run in runs if counted[run.email] - run.resends == 2]
    assert all(run in lost for run in pinned), (pinned, counted)
    for run in runs:
        sent = counted[run.email] - run.resends  # reservations of the journey's first execution
        assert sent in (1, 2), (run, counted[run.email])
        if sent == 1:  # a code that went out is never sent again
            assert codes[run.email] == 1 + run.resends, (run, codes[run.email])
        else:  # the lost code (if the emulator got the call) and the takeover's: no third
            assert codes[run.email] - run.resends in (1, 2), (run, codes[run.email])
    takeovers = sum(
        1 for i in fleet if i is not victim for r in i.records("a reservation of this execution outlived")
    )
    assert takeovers == len(lost), (takeovers, len(lost))
    waits = sorted(run.generated - killed_at for run in lost)
    extra = sum(codes[run.email] - run.resends - 1 for run in lost)
    print(
        f"\nkill -9 under load: {len(runs)} journeys, all completed; {len(lost)} sends lost with the victim, "
        f"each taken over once ({extra} extra codes delivered); those journeys' Generate answered "
        f"{statistics.median(waits):.2f} s (p50) / {max(waits):.2f} s (max) after the kill; "
        f"refusals on the way: {dict(Counter(r for run in runs for r in run.refusals))}"
    )

    # The victim comes back (on a fresh port, as a rescheduled pod gets a fresh address: while it was dead its
    # old port was free for any outgoing connection to take) and serves again; the fleet goes on.
    victim.port = free_port()
    victim.start()
    served = _generates(victim)
    with StepExecutorClient(_target(fleet), timeout=10) as client:
        journeys = Journeys(client, emulator)
        for email in [r.email for r in runs[:12]]:
            if _generates(victim) > served + 1:
                break
            count = len(emulator.outbox(email))
            sent, journey = journeys.generate(email, connection="resend")
            assert sent.WhichOneof("outcome") == "success", sent
            code = emulator.latest_code(email, after=count)
            assert (
                journeys.validate(journey, email, code, connection="resend").WhichOneof("outcome")
                == "success"
            )
    assert _generates(victim) > served, "the restarted process served steps again"
