"""Test harness: the emulator over HTTP, a connections file, the real server on a free port, journeys."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cognito_emulator import SeedResult
from cognito_emulator.connections_file import write_connections_file
from cognito_emulator.seed import cognito_client
from otp_step_client import Journey, Step, StepExecutorClient
from otp_step_service.app.execution import StepRunner
from otp_step_service.app.service import Service
from otp_step_service.app.stores import challenge_store, store_secrets
from otp_step_service.config.settings import ServiceSettings
from otp_step_service.steps.challenges import Challenge, SendRequest, SendResult
from otp_step_service.steps.errors import ChallengeStoreError
from otp_step_service.steps.ports import ChallengeStore
from stepexecutor.v1 import step_executor_pb2 as pb

# Ports free_port has handed out: the kernel may give the port it just probed and closed to the next probe,
# so two ports taken before either is bound could be one (about 1 in 14,000 a pair, dozens of pairs a run).
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free TCP port on 127.0.0.1, never one this process handed out before (the race with other binders is
    accepted: nothing else binds loopback here)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def exported(spans: Sequence[Any]) -> str:
    """Spans as they leave the process: the OTLP request the service sends for them, in protobuf's text
    form (names, attributes, events, links, status and resource), for scanning what a collector would see."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from otp_step_service.observability.otlp_spans import SpanEncoder

    return str(ExportTraceServiceRequest.FromString(SpanEncoder().encode(spans)))


def wrong_code(code: str) -> str:
    """A well-formed code that is not `code`."""
    return "12345678" if code != "12345678" else "87654321"


def http_json(method: str, url: str, body: Any = None) -> Any:
    """A JSON request to the emulator's control endpoints (outbox, faults)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


@dataclass
class Emulator:
    """The emulator as the tests see it: over HTTP only."""

    endpoint_url: str
    seed: SeedResult

    def outbox(self, destination: str) -> list[dict[str, Any]]:
        """Messages sent to `destination`, oldest first."""
        query = urllib.parse.urlencode({"destination": destination})
        return list(http_json("GET", f"{self.endpoint_url}/_outbox?{query}")["messages"])

    def latest_code(self, destination: str, after: int = 0, timeout: float = 5.0) -> str:
        """The code of the newest message beyond the first `after`, polling with a deadline."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.outbox(destination)
            if len(messages) > after:
                return str(messages[-1]["code"])
            if time.monotonic() > deadline:
                raise AssertionError(f"no new message for {destination} within {timeout} s")
            time.sleep(0.02)

    def inject(self, **fault: Any) -> dict[str, Any]:
        """Add a fault (the emulator's POST /_faults contract)."""
        return dict(http_json("POST", f"{self.endpoint_url}/_faults", fault))

    def clear_faults(self) -> None:
        """Remove every fault."""
        http_json("DELETE", f"{self.endpoint_url}/_faults")

    def admin(self) -> Any:
        """A boto3 client with dummy credentials, for arranging pool state."""
        return cognito_client(self.endpoint_url, self.seed.region)


@dataclass
class Journeys:
    """Runs journeys against the service, each with a fresh run id unless told otherwise."""

    client: StepExecutorClient
    emulator: Emulator
    journey_id: str = "jit-migration"
    runs: list[str] = field(default_factory=list)

    def journey(self, run_id: str | None = None, step_id: str = "send-code", **kwargs: Any) -> Journey:
        """A journey context with a unique run id."""
        run = run_id or f"run-{uuid.uuid4().hex[:12]}"
        self.runs.append(run)
        return Journey(self.journey_id, run_id=run, step_id=step_id, **kwargs)

    def generate(
        self,
        identifier: str,
        channel: str = "EMAIL",
        connection: str = "demo",
        journey: Journey | None = None,
        **step: Any,
    ) -> tuple[pb.GenerateOtpResponse, Journey]:
        """Run Generate; returns the response and the journey (for Validate)."""
        journey = journey or self.journey()
        response = self.client.generate_otp(journey, Step(connection, identifier, channel=channel, **step))  # type: ignore[arg-type]
        return response, journey

    def validate(
        self, journey: Journey, identifier: str, code: str, connection: str = "demo", **step: Any
    ) -> pb.ValidateOtpResponse:
        """Run Validate in the same journey run."""
        return self.client.validate_otp(
            journey.at_step("check-code"), Step(connection, identifier, **step), code
        )


def write_connections(path: Path, seed: SeedResult, secret_file: Path, extra_clients: dict[str, str]) -> None:
    """The connections file the tests' service reads: one connection per behaviour under test."""
    base = {
        "region": seed.region,
        "user_pool_id": seed.user_pool_id,
        "endpoint_url": seed.endpoint_url,
        # The suite sends many codes to a handful of demo users; the per-identifier cap and the prefix guard
        # have connections of their own.
        "send_limit": 1000,
        "sms_prefix_limit": 100000,
        "ip_send_limit": 100000,
    }
    wrong_secret = secret_file.with_name("wrong.secret")
    wrong_secret.write_text("not-the-secret")
    legacy_secret = secret_file.with_name("legacy.secret")
    legacy_secret.write_text(extra_clients["legacy_secret"])
    connections: dict[str, dict[str, Any]] = {
        "demo": {
            "client_id": seed.client_id,
            "client_secret_file": str(secret_file),
            "default_phone_region": "US",
        },
        "admin": {"client_id": seed.client_id, "client_secret_file": str(secret_file), "api": "admin"},
        "tokens": {
            "client_id": seed.client_id,
            "client_secret_file": str(secret_file),
            "return_tokens": True,
        },
        "short": {
            "client_id": seed.client_id,
            "client_secret_file": str(secret_file),
            "session_validity_seconds": 1,
        },
        "wrong-secret": {"client_id": seed.client_id, "client_secret_file": str(wrong_secret)},
        "two-attempts": {
            "client_id": seed.client_id,
            "client_secret_file": str(secret_file),
            "max_attempts": 2,
        },
        "lockout": {
            "client_id": seed.client_id,
            "client_secret_file": str(secret_file),
            "lockout_threshold": 4,
            "lockout_window_seconds": 60,
        },
        "slow": {
            "client_id": seed.client_id,
            "client_secret_file": str(secret_file),
            "call_timeout_seconds": 0.3,
        },
        "legacy-protected": {"client_id": extra_clients["legacy"], "client_secret_file": str(legacy_secret)},
        "legacy-open": {
            "client_id": extra_clients["legacy"],
            "client_secret_file": str(legacy_secret),
            "user_enumeration_protection": False,
        },
        "legacy-timing": {
            "client_id": extra_clients["legacy"],
            "client_secret_file": str(legacy_secret),
            "lockout_threshold": 100,
            "resend_cooldown_seconds": 0,
        },
        "no-user-auth": {"client_id": extra_clients["no_user_auth"]},
        "resend": {
            "client_id": seed.client_id,
            "client_secret_file": str(secret_file),
            "resend_cooldown_seconds": 1,
        },
        "send-cap": {
            "client_id": seed.client_id,
            "client_secret_file": str(secret_file),
            "send_limit": 2,
            "resend_cooldown_seconds": 0,
            "send_window_seconds": 60,
        },
        "uk-sms": {
            "client_id": seed.client_id,
            "client_secret_file": str(secret_file),
            "sms_countries": ["GB"],
        },
        "prefix-guard": {
            "client_id": seed.client_id,
            "client_secret_file": str(secret_file),
            "sms_prefix_limit": 2,
            "sms_prefix_digits": 7,
            "resend_cooldown_seconds": 0,
        },
        "per-ip": {
            "client_id": seed.client_id,
            "client_secret_file": str(secret_file),
            "ip_send_limit": 2,
            "resend_cooldown_seconds": 0,
        },
        "breaker": {
            "client_id": seed.client_id,
            "client_secret_file": str(secret_file),
            "send_budget_per_minute": 3,
        },
        "per-tenant": {
            "client_id": seed.client_id,
            "client_secret_file": str(secret_file),
            "tenant_send_budget_per_minute": 2,
        },
        "budget": {
            "client_id": seed.client_id,
            "client_secret_file": str(secret_file),
            "send_limit": 10,
            "send_window_seconds": 900,
        },
        "reveal": {
            "client_id": seed.client_id,
            "client_secret_file": str(secret_file),
            "reveal_identifiers": True,
        },
    }
    write_connections_file(path, {name: {**base, **values} for name, values in connections.items()})


def connection_tables(connections_file: Path, *names: str) -> dict[str, dict[str, Any]]:
    """The named `[connections.*]` tables of the suite's file, to write a smaller one with (a service with a
    few connections starts in a fraction of a second; with all of the suite's, in seconds)."""
    tables = tomllib.loads(connections_file.read_text())["connections"]
    return {name: tables[name] for name in names}


def connections_subset(connections_file: Path, path: Path, names: Sequence[str]) -> Path:
    """A connections file with only the `names` of `connections_file`: a service process warms up every
    connection it has (an AWS client apiece, up to a second on a loaded machine), so one started for a few
    connections starts several times faster."""
    return write_connections_file(path, connection_tables(connections_file, *names))


T = TypeVar("T")


class FakeClock:
    """A Clock the test moves by hand: `wall` for expiries, `mono` for deadlines."""

    def __init__(self, wall: float = 1_000_000.0, mono: float = 100.0) -> None:
        self.wall = wall
        self.mono = mono

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        """Move both clocks on."""
        self.wall += seconds
        self.mono += seconds

    async def sleep(self, seconds: float) -> None:
        """A step's pause: the clocks move on at once (other tasks get their turn)."""
        self.advance(seconds)
        await asyncio.sleep(0)


class RecordingStore:
    """A ChallengeStore that hands everything to the real one and remembers the Cognito sessions it stores,
    so tests can prove sessions never leak (the seam `Service.build(store=...)`, no monkeypatching)."""

    def __init__(self, inner: ChallengeStore) -> None:
        self.inner = inner
        self.sessions: list[str] = []

    async def finish_send(
        self, request: SendRequest, result: SendResult, challenge: Challenge | None
    ) -> None:
        if challenge is not None and challenge.session:
            self.sessions.append(challenge.session)
        await self.inner.finish_send(request, result, challenge)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FailingStore:
    """A ChallengeStore that fails the next `failures[operation]` calls of an operation (as a Redis in a
    failover would: ChallengeStoreError), then hands them to the real one; `calls` counts every call."""

    def __init__(self, inner: Any, **failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        operation = getattr(self.inner, name)

        async def failing(*args: Any) -> Any:
            self.calls[name] += 1
            if self.failures.get(name, 0) > 0:
                self.failures[name] -= 1
                raise ChallengeStoreError("ConnectionError")
            return await operation(*args)

        return failing


class RunningService:
    """The real service on its own event loop in a background thread, on 127.0.0.1 and a free port, so the
    tests drive it with the synchronous client over a real socket."""

    def __init__(self, settings: ServiceSettings, tracing: bool = False) -> None:
        self.store = RecordingStore(
            challenge_store(
                settings.challenge_store,
                settings.challenge_keys_file,
                secrets=store_secrets(settings),
                min_replicas=settings.store_min_replicas,
            )
        )
        self.service = Service.build(settings, tracing=tracing, store=self.store)  # type: ignore[arg-type]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="service-loop", daemon=True)

    @property
    def runner(self) -> StepRunner:
        """The service's step runner."""
        return self.service.runner

    @property
    def port(self) -> int:
        """The bound port."""
        return self.service.port

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run `coroutine` on the service's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(self) -> None:
        """Bind and serve (warm-up included, self-test off: tests call it explicitly)."""
        self._thread.start()
        self.run(self.service.prepare(self_test=False))
        self.run(self.service.start())

    def stop(self, grace: float = 1, notice: float = 0) -> None:
        """NOT_SERVING for `notice`, drain within `grace`, close everything, end the loop."""
        if not self._thread.is_alive():
            return
        self.run(self.service.stop(grace, notice))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@contextmanager
def fresh_journeys(connections_file: Path, emulator: Emulator, **overrides: str) -> Iterator[Journeys]:
    """Journeys against a service of their own (fresh in-memory counters), stopped when the block ends."""
    service = build_service(connections_file, **overrides)
    service.start()
    try:
        with StepExecutorClient(f"127.0.0.1:{service.port}") as client:
            yield Journeys(client, emulator)
    finally:
        service.stop(1)


def build_service(
    connections_file: Path, tracing: bool = False, listen: str = "127.0.0.1:0", **overrides: str
) -> RunningService:
    """A service on a free loopback port, self-test off (tests call it explicitly); not yet started."""
    settings = ServiceSettings.from_env(
        listen=listen, connections_path=str(connections_file), self_test="off", **overrides
    )
    return RunningService(settings, tracing=tracing)


def run_sample_journeys(journeys: Journeys, emulator: Emulator) -> list[str]:
    """Success, wrong code, abort and enumeration-protected journeys; returns every secret they involved."""
    secrets = [emulator.seed.client_secret]
    for identifier, destination, channel in (
        ("ada@example.com", "ada@example.com", "EMAIL"),
        ("+15555550101", "+15555550101", "SMS"),
    ):
        before = len(emulator.outbox(destination))
        _, journey = journeys.generate(
            identifier, channel=channel, connection="tokens", event_data="STEP_INPUT_OUTPUT"
        )
        code = emulator.latest_code(destination, after=before)
        secrets.append(code)
        wrong = wrong_code(code)
        journeys.validate(journey, identifier, wrong, connection="tokens", event_data="STEP_INPUT_OUTPUT")
        response = journeys.validate(
            journey, identifier, code, connection="tokens", event_data="STEP_INPUT_OUTPUT"
        )
        assert response.WhichOneof("outcome") == "success", response
        tokens = response.success.tokens
        secrets += [tokens.id_token, tokens.access_token, tokens.refresh_token]
    journeys.generate("nobody@example.com", abort_on_failure=True)
    journeys.generate("bad identifier", abort_on_failure=True, event_data="STEP_INPUT_OUTPUT")
    return secrets


def kill_process(process: subprocess.Popen[bytes] | None) -> None:
    """kill -9 and reap: no drain, no save, its connections reset."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL when it has not exited within `timeout` seconds."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_process(process)


def start_service_process(
    connections_file: Path,
    log: Path,
    env: Mapping[str, str] = {},
    listen: str = "127.0.0.1:0",
    servers: int = 1,
    flags: Sequence[str] = (),
) -> tuple[subprocess.Popen[bytes], int]:
    """`python -m otp_step_service serve [flags]`, stderr to `log`; returns once `servers` processes serve,
    with the process and its port."""
    command = [sys.executable, "-m", "otp_step_service", "serve", "--listen", listen, *flags]
    with log.open("w") as sink:
        process = subprocess.Popen(
            [*command, "--connections", str(connections_file)],
            env={**os.environ, **env},
            stderr=sink,
            start_new_session=True,  # its own process group: a test can stop forked servers too
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ports = re.findall(r"\(port (\d+);", log.read_text())
        if len(ports) >= servers:
            return process, int(ports[0])
        assert process.poll() is None, log.read_text()
        time.sleep(0.05)
    # Not started in time: stop it (and any server it forked) before failing, so nothing outlives the test.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    raise AssertionError("the service did not start: " + log.read_text())


@dataclass(frozen=True)
class Person:
    """A user of the pool, reachable by a verified email and a verified phone number (two aliases)."""

    username: str
    email: str
    phone: str


def unused_number() -> str:
    """A US-shaped number nobody in the pool has."""
    return f"+1555{uuid.uuid4().int % 10**7:07d}"


def new_person(emulator: Emulator, pool_id: str | None = None) -> Person:
    """A user created for this run: nothing of it is in any store or outbox yet."""
    token = uuid.uuid4().hex[:12]
    person = Person(f"u-{token}", f"u-{token}@example.com", unused_number())
    emulator.admin().admin_create_user(
        UserPoolId=pool_id or emulator.seed.user_pool_id,
        Username=person.username,
        UserAttributes=[
            {"Name": "email", "Value": person.email},
            {"Name": "email_verified", "Value": "true"},
            {"Name": "phone_number", "Value": person.phone},
            {"Name": "phone_number_verified", "Value": "true"},
        ],
        MessageAction="SUPPRESS",
    )
    return person
