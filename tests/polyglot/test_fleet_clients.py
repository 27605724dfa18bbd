"""Clients that ride out a fleet: each example orchestrator, with the shipped gRPC service config, against one
name that resolves to three instance addresses, as a headless Service does (docs: "Running a fleet", Clients
that ride it out).

One journey per language, the three at once (most of the time is two keepalive intervals of waiting):

1. The name resolves to three addresses; none is up. The Generate waits (waitForReady) past the time its four
   attempts would have taken without it, while the client keeps trying every address.
2. Instance A comes up behind a front whose first answer to GenerateOtp is UNAVAILABLE (an instance going
   away): the client library retries it by itself (retryPolicy), with the same request.
3. Instance B comes up, straight on the service; instance C never does. The user takes their time to read the
   code (the outbox holds it back) while the idle connections to A and B ping at the configured interval, and
   the server answers no ping with a GOAWAY.
4. The two Validates go one to A, one to B (round_robin), and the journey completes.

Go and TypeScript resolve the name through a DNS server of the test's own, named in the target's authority
(`dns://127.0.0.1:PORT/otp-steps.test:PORT`: grpc-go asks it; grpc-js does with
GRPC_NODE_USE_ALTERNATIVE_RESOLVER=true); Java through a hosts file (`jdk.net.hosts.file`: grpc-java takes no
DNS server in the target). Keepalive: the clients ping every 10 s, the least grpc-go and grpc-java send, against the service's
test setting of one ping per 5 s; the shipped pair is 30 s against 20 s.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import Emulator

from .fronts import Connection, FlakyFront, Gate, HeldOutbox, Loop, NameServer, running
from .orchestrators import MIN_CLIENT_PING_SECONDS, Example, RunningService, example_env, run_example

LANGUAGES = ("go", "ts", "java")
NAME = "otp-steps.test"
ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")  # instances A, B, C
KEEPALIVE_SECONDS = 10
# A call that does not wait for ready fails within its four attempts' backoff (at most 0.1 + 0.2 + 0.4 s).
RETRY_BUDGET_SECONDS = 1.0
# The service's own enforcement, for the front standing in for instance A.
SERVER_OPTIONS = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", MIN_CLIENT_PING_SECONDS * 1000),
)
ENHANCE_YOUR_CALM = 0xB  # the GOAWAY error code of too_many_pings


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    loop = Loop()
    yield loop
    loop.close()


def new_user(emulator: Emulator, name: str) -> str:
    """A confirmed user with a verified email of its own: each journey reads only its own codes."""
    email = f"{name}-{secrets.token_hex(3)}@example.com"
    admin = emulator.admin()
    pool = emulator.seed.user_pool_id
    admin.admin_create_user(
        UserPoolId=pool,
        Username=email.split("@")[0],
        UserAttributes=[{"Name": "email", "Value": email}, {"Name": "email_verified", "Value": "true"}],
        MessageAction="SUPPRESS",
    )
    admin.admin_set_user_password(
        UserPoolId=pool,
        Username=email.split("@")[0],
        Password=secrets.token_urlsafe(18) + "aA1!",
        Permanent=True,
    )
    return email


def wait_until(
    condition: Callable[[], bool], what: str, timeout: float, process: subprocess.Popen[str]
) -> None:
    """Poll `condition` with a deadline; the example must still be running meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, (
            f"the example ended (exit {process.returncode}) while waiting for {what}"
        )
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def intervals(times: list[float]) -> list[float]:
    return [round(b - a, 2) for a, b in itertools.pairwise(times)]


@dataclass
class FleetRun:
    """What one example's journey through the fleet did."""

    output: str
    returncode: int | None
    waited_seconds: float  # from the first refused connection to instance A coming up
    gates: tuple[Gate, Gate, Gate]
    front: FlakyFront


def gates_on_one_port(loop: Loop) -> tuple[Gate, Gate, Gate]:
    """Three refusing gates, one port, one address each: what the name resolves to."""
    for _ in range(5):
        first = Gate(loop, ADDRESSES[0], 0)
        try:
            return first, Gate(loop, ADDRESSES[1], first.port), Gate(loop, ADDRESSES[2], first.port)
        except OSError:  # the port is taken on another address: another one
            first.close()
    raise AssertionError("no port free on all three addresses")


@dataclass(frozen=True)
class Surroundings:
    """What every language's fleet shares: the service, the emulator, how the name resolves, the outbox."""

    service: RunningService
    emulator: Emulator
    loop: Loop
    names: NameServer  # for grpc-go and grpc-js
    hosts_file: Path  # for grpc-java
    outbox: HeldOutbox
    logs: Path


def journey_through_a_fleet(language: str, example: Example, around: Surroundings) -> FleetRun:
    gates = gates_on_one_port(around.loop)
    front = FlakyFront(around.service.address, {"GenerateOtp": 1}, SERVER_OPTIONS)
    try:
        return _journey(language, example, around, gates, front)
    except BaseException:
        with running(*gates, front):
            raise


def _journey(
    language: str, example: Example, around: Surroundings, gates: tuple[Gate, Gate, Gate], front: FlakyFront
) -> FleetRun:
    a, b, c = gates
    service, outbox, log = around.service, around.outbox, around.logs / f"{language}.log"
    identifier = new_user(around.emulator, f"fleet-{language}")
    outbox.hold(identifier)
    settings: dict[str, str] = {
        "OTP_STEP_OUTBOX_URL": outbox.url,
        "OTP_STEP_IDENTIFIER": identifier,
        "OTP_STEP_TIMEOUT": "60s",
        "OTP_STEP_TIMEOUT_MS": "60000",
        "OTP_STEP_KEEPALIVE": f"{KEEPALIVE_SECONDS}s",
        "OTP_STEP_KEEPALIVE_MS": str(KEEPALIVE_SECONDS * 1000),
    }
    command = example.command
    if language == "java":
        settings["OTP_STEP_TARGET"] = f"dns:///{NAME}:{a.port}"
        command = [command[0], f"-Djdk.net.hosts.file={around.hosts_file}", *command[1:]]
    else:
        settings["OTP_STEP_TARGET"] = f"dns://127.0.0.1:{around.names.port}/{NAME}:{a.port}"
        settings["GRPC_NODE_USE_ALTERNATIVE_RESOLVER"] = "true"  # grpc-js: ask the target's DNS server
    with log.open("w") as sink:
        process = subprocess.Popen(
            command,
            cwd=example.folder,
            env=example_env(service, **settings),
            stdout=sink,
            stderr=sink,
            text=True,
        )
    try:
        # 1. Nothing is up: the Generate waits while the client keeps trying every address.
        wait_until(
            lambda: (
                len(a.refused) >= 2
                and time.monotonic() - a.refused[0] >= RETRY_BUDGET_SECONDS
                and bool(b.refused and c.refused)
            ),
            "connection attempts on every address for longer than the retry budget",
            30,
            process,
        )
        waited = time.monotonic() - a.refused[0]
        # 2. A comes up behind the flaky front; the library retries the UNAVAILABLE Generate.
        a.open(front.address)
        wait_until(lambda: len(front.of("GenerateOtp")) >= 2, "the Generate retried", 30, process)
        # 3. B comes up; while the code is held back, both idle connections ping.
        b.open(service.address)
        wait_until(
            lambda: all(g.connections and len(g.connections[0].idle_pings()) >= 2 for g in (a, b)),
            "two keepalive pings on the connections to A and B",
            4 * KEEPALIVE_SECONDS + 10,
            process,
        )
        # 4. The user types the code.
        outbox.release(identifier)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    return FleetRun(log.read_text(), process.returncode, waited, gates, front)


@pytest.fixture(scope="module")
def fleet_runs(
    request: pytest.FixtureRequest,
    step_service: RunningService,
    emulator: Emulator,
    loop: Loop,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Mapping[str, FleetRun | str | Exception]]:
    """The three languages' journeys through their fleets, at once; a language whose toolchain is missing
    (by hand, not under CI) maps to the reason."""
    folder = tmp_path_factory.mktemp("fleet")
    hosts_file = folder / "hosts"
    hosts_file.write_text("".join(f"{address} {NAME}\n" for address in ADDRESSES))
    examples: dict[str, Example] = {}
    runs: dict[str, FleetRun | str | Exception] = {}
    for language in LANGUAGES:
        try:
            examples[language] = request.getfixturevalue(f"{language}_example")
        except pytest.skip.Exception as skipped:
            runs[language] = str(skipped)
    names = NameServer(loop, {NAME: ADDRESSES})
    outbox = HeldOutbox(step_service.outbox_url)
    around = Surroundings(step_service, emulator, loop, names, hosts_file, outbox, folder)
    with running(names, outbox), concurrent.futures.ThreadPoolExecutor(len(examples) or 1) as pool:
        started = {
            language: pool.submit(journey_through_a_fleet, language, example, around)
            for language, example in examples.items()
        }
        for language, future in started.items():
            try:
                runs[language] = future.result(timeout=180)
            except (AssertionError, OSError, subprocess.SubprocessError) as failed:
                runs[language] = failed  # that language's tests fail with it; the others still report
        yield runs
        for run in runs.values():
            if isinstance(run, FleetRun):
                run.front.close()
                for gate in run.gates:
                    gate.close()


def fleet_run(runs: Mapping[str, FleetRun | str | Exception], language: str) -> FleetRun:
    run = runs[language]
    if isinstance(run, str):
        pytest.skip(run)
    if isinstance(run, Exception):
        raise run
    assert run.returncode == 0, f"the journey failed (exit {run.returncode}):\n{run.output}"
    assert run.output.rstrip().endswith("journey: completed"), run.output
    return run


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_call_waits_for_an_instance_while_every_address_is_down(
    fleet_runs: Mapping[str, FleetRun | str | Exception], language: str
) -> None:
    run = fleet_run(fleet_runs, language)
    a, b, c = run.gates
    # Without waitForReady the Generate would have failed within its attempts' backoff.
    assert run.waited_seconds >= RETRY_BUDGET_SECONDS
    assert len(a.refused) >= 2 and b.refused, "the client kept trying the addresses while it waited"
    # The address that never came up cost the journey nothing.
    assert c.refused and not c.connections


@pytest.mark.parametrize("language", LANGUAGES)
def test_an_unavailable_generate_is_retried_by_the_client_library(
    fleet_runs: Mapping[str, FleetRun | str | Exception], language: str
) -> None:
    run = fleet_run(fleet_runs, language)
    first, second = run.front.of("GenerateOtp")
    assert first.answered_unavailable and not second.answered_unavailable
    assert second.request == first.request, "the same step execution, byte for byte"
    assert (first.previous_attempts, second.previous_attempts) == (None, "1"), "a retry by the library"
    assert "retrying" not in run.output, "the example's own loop retries deadlines only"


@pytest.mark.parametrize("language", LANGUAGES)
def test_idle_connections_ping_at_the_configured_interval_and_draw_no_goaway(
    fleet_runs: Mapping[str, FleetRun | str | Exception], language: str
) -> None:
    run = fleet_run(fleet_runs, language)
    a, b, _ = run.gates
    for gate in (a, b):
        assert len(gate.connections) == 1, "one connection to each instance, never dropped"
        connection: Connection = gate.connections[0]
        pings = connection.idle_pings()
        assert len(pings) >= 2
        # Timers fire late on a busy machine, never early: the interval is the configured one or a bit more.
        gaps = intervals(pings)
        assert all(KEEPALIVE_SECONDS - 0.5 <= gap <= KEEPALIVE_SECONDS + 5 for gap in gaps), gaps
        assert all(gap >= MIN_CLIENT_PING_SECONDS for gap in gaps)
        assert connection.goaways() == [], "the server accepted every ping"


@pytest.mark.parametrize("language", LANGUAGES)
def test_round_robin_spreads_the_validates_over_both_instances(
    fleet_runs: Mapping[str, FleetRun | str | Exception], language: str
) -> None:
    run = fleet_run(fleet_runs, language)
    a, b, _ = run.gates
    # Only A was up for the Generate's two attempts; by the Validates both were, and consecutive picks go to
    # alternate instances (pick_first would not even have connected to B).
    assert (a.connections[0].calls(), b.connections[0].calls()) == (3, 1)
    assert [c.method for c in run.front.calls] == ["GenerateOtp", "GenerateOtp", "ValidateOtp"]


def test_a_client_pinging_faster_than_the_service_allows_gets_goaway(
    step_service: RunningService, loop: Loop
) -> None:
    """The control: the same gate, the same service, a client pinging every second (faster than the
    service's setting of 5 s) — the service answers GOAWAY too_many_pings. So the GOAWAYs the examples did
    not get would have been seen."""
    gate = Gate(loop, "127.0.0.1", 0)
    gate.open(step_service.address)
    options = [
        ("grpc.keepalive_time_ms", 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    with running(gate), grpc.insecure_channel(f"127.0.0.1:{gate.port}", options=options) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        deadline = time.monotonic() + 20
        while not any(c.goaways() for c in gate.connections):
            assert time.monotonic() < deadline, [intervals(c.idle_pings(0)) for c in gate.connections]
            time.sleep(0.1)
        code, debug = next(g for c in gate.connections for g in c.goaways())
        assert (code, debug) == (ENHANCE_YOUR_CALM, b"too_many_pings")


@pytest.mark.parametrize("language", LANGUAGES)
def test_an_unavailable_validate_is_not_retried(
    step_service: RunningService, emulator: Emulator, request: pytest.FixtureRequest, language: str
) -> None:
    """ValidateOtp has no retryPolicy: a Validate that may already have spent an attempt is the journey's to
    decide on, so the UNAVAILABLE reaches the example after one attempt."""
    example: Example = request.getfixturevalue(f"{language}_example")
    front = FlakyFront(step_service.address, {"ValidateOtp": 1}, SERVER_OPTIONS)
    with running(front):
        result = run_example(
            example.command,
            example.folder,
            step_service,
            OTP_STEP_TARGET=front.address,
            OTP_STEP_IDENTIFIER=new_user(emulator, f"once-{language}"),
        )
    assert result.returncode == 1, result
    assert re.search(r"journey: FAILED: validate could not run: (UNAVAILABLE|Unavailable)", result.stderr), (
        result
    )
    assert [(c.method, c.previous_attempts) for c in front.calls] == [
        ("GenerateOtp", None),
        ("ValidateOtp", None),
    ]
