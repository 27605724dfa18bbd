"""Whole journeys against the emulator: Generate, the code from the outbox, Validate; and the same Cognito
calls made directly with boto3.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench import ghz
from bench.boto_load import clear_outbox, outbox_codes
from bench.ghz import GhzLoad, LoadResult
from bench.processes import ManagedProcess
from bench.scenarios.core import Bench, ScenarioResult
from bench.scenarios.floors import boto_result
from bench.stack import (
    CognitoApp,
    ServiceProcess,
    start_emulator,
    write_connections,
)


# ---------------------------------------------------------------------------------------------------------
# Scenario 5: whole journeys against the emulator, beside the same calls made directly with boto3.
@dataclass(frozen=True, slots=True)
class EmulatorPool:
    """The bench pool in the emulator and its users' email addresses."""

    app: CognitoApp
    users: tuple[str, ...]


def seed_pool(endpoint: str, users: int) -> EmulatorPool:
    """A pool for EMAIL_OTP sign-in (alias email), an app client with a secret, `users` verified users."""
    from bench.boto_load import make_client

    client = make_client(endpoint, 8)
    pool = client.create_user_pool(
        PoolName="bench",
        UserPoolTier="ESSENTIALS",
        Policies={"SignInPolicy": {"AllowedFirstAuthFactors": ["EMAIL_OTP"]}},
        AliasAttributes=["email"],
        MfaConfiguration="OFF",
    )["UserPool"]
    app = client.create_user_pool_client(
        UserPoolId=pool["Id"],
        ClientName="bench",
        GenerateSecret=True,
        ExplicitAuthFlows=["ALLOW_USER_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        PreventUserExistenceErrors="ENABLED",
        AuthSessionValidity=3,
    )["UserPoolClient"]
    emails = tuple(f"bench{i:05d}@example.com" for i in range(users))

    def create(email: str) -> None:
        client.admin_create_user(
            UserPoolId=pool["Id"],
            Username=email.split("@")[0],
            MessageAction="SUPPRESS",
            UserAttributes=[
                {"Name": "email", "Value": email},
                {"Name": "email_verified", "Value": "true"},
                {"Name": "given_name", "Value": "Bench"},
            ],
        )

    with ThreadPoolExecutor(8) as pool_threads:
        list(pool_threads.map(create, emails))
    return EmulatorPool(CognitoApp(endpoint, pool["Id"], app["ClientId"], app["ClientSecret"]), emails)


def journeys(bench: Bench) -> None:
    """Scenario 5: GenerateOtp + ValidateOtp through the service vs InitiateAuth + Respond directly."""
    plan = bench.plan
    emulator, url = start_emulator(bench.logs)
    service: ServiceProcess | None = None
    try:
        bench.say(f"scenario 5: seeding {plan.journeys} users in the emulator")
        pool = seed_pool(url, plan.journeys)
        connections = write_connections(bench.work / "emulator", "emulator", pool.app)
        service = bench.service("service-emulator", connections)
        users_file = bench.work / "emulator" / "users.json"
        users_file.write_text(json.dumps(list(pool.users)))
        through = ScenarioResult(
            "5-journeys", "End to end: Generate + Validate via the service, emulator", "journeys/s"
        )
        direct = ScenarioResult("5d-direct", "End to end: InitiateAuth + Respond, boto3 direct", "journeys/s")
        direct_get_user = ScenarioResult(
            "5g-direct-getuser", "Direct + GetUser (the Cognito calls Validate makes)", "journeys/s"
        )
        watched = {"service": service.process, "emulator": emulator}
        journey_run(bench, service, pool, watched, warm=True)
        for rep in range(plan.repetitions):
            bench.say(f"scenario 5: repetition {rep + 1}/{plan.repetitions}")
            through.runs.append(journey_run(bench, service, pool, watched))
            direct.runs.append(direct_run(bench, url, pool, users_file, emulator, get_user=False))
            direct_get_user.runs.append(direct_run(bench, url, pool, users_file, emulator, get_user=True))
    finally:
        if service is not None:
            service.process.stop()
        emulator.stop()
    if service is not None:
        through.step_errors = bench.step_errors(service)
    bench.results += [through, direct, direct_get_user]


def journey_run(
    bench: Bench,
    service: ServiceProcess,
    pool: EmulatorPool,
    watched: Mapping[str, ManagedProcess],
    warm: bool = False,
) -> LoadResult:
    """One repetition through the service: ghz Generate (a data file), codes from the outbox, ghz Validate."""
    plan = bench.plan
    users = pool.users[: max(10, plan.journeys // 10)] if warm else pool.users
    runs = [str(uuid.uuid4()) for _ in users]
    journey = {"journey_id": "bench-e2e", "step_id": "send-code"}
    generate = [
        {
            "journey": {**journey, "journey_run_id": run},
            "step": {"connection": "emulator", "user_identifier": email, "otp_channel": "OTP_CHANNEL_EMAIL"},
        }
        for run, email in zip(runs, users, strict=True)
    ]
    folder = bench.work / "emulator"
    (folder / "generate.json").write_text(json.dumps(generate))
    clear_outbox(pool.app.endpoint_url)
    bound = plan.seconds * 10 + 30  # count-bounded; the time bound only guards against a stuck run
    first = bench.ghz(
        service,
        GhzLoad(
            ghz.GENERATE,
            plan.concurrency,
            total=len(users),
            max_seconds=bound,
            data_file=folder / "generate.json",
        ),
        watched,
    )
    codes = outbox_codes(pool.app.endpoint_url)
    validate = [
        {
            "journey": {**journey, "journey_run_id": run, "step_id": "check-code"},
            "step": {"connection": "emulator", "user_identifier": email},
            "otp_code": codes.get(email, "00000000"),
        }
        for run, email in zip(runs, users, strict=True)
    ]
    (folder / "validate.json").write_text(json.dumps(validate))
    second = bench.ghz(
        service,
        GhzLoad(
            ghz.VALIDATE,
            plan.concurrency,
            total=len(users),
            max_seconds=bound,
            data_file=folder / "validate.json",
        ),
        watched,
    )
    return combine_phases(first, second)


def combine_phases(first: LoadResult, second: LoadResult) -> LoadResult:
    """Journeys per second over two phases run one after the other; CPU weighted by each phase's time."""
    seconds = first.seconds + second.seconds
    errors = dict(first.errors)
    for kind, count in second.errors.items():
        errors[kind] = errors.get(kind, 0) + count
    journeys_ok = min(first.ok, second.ok)
    combined = LoadResult(
        requests=max(first.requests, second.requests),
        ok=journeys_ok,
        errors=errors,
        seconds=seconds,
        rps=journeys_ok / seconds if seconds else 0.0,
        p50_ms=first.p50_ms + second.p50_ms,
        p95_ms=first.p95_ms + second.p95_ms,
        p99_ms=first.p99_ms + second.p99_ms,
        generator_cpu_seconds=first.generator_cpu_seconds + second.generator_cpu_seconds,
        extra={
            "generate": {
                "rps": first.rps,
                "p50_ms": first.p50_ms,
                "p99_ms": first.p99_ms,
                "cpu": first.cpu_cores,
            },
            "validate": {
                "rps": second.rps,
                "p50_ms": second.p50_ms,
                "p99_ms": second.p99_ms,
                "cpu": second.cpu_cores,
            },
            "latency_note": "journey latency = Generate + Validate percentiles added",
        },
    )
    names = set(first.cpu_cores) | set(second.cpu_cores)
    combined.cpu_cores = (
        {
            n: round(
                (first.cpu_cores.get(n, 0) * first.seconds + second.cpu_cores.get(n, 0) * second.seconds)
                / seconds,
                3,
            )
            for n in names
        }
        if seconds
        else {}
    )
    return combined


def direct_run(
    bench: Bench, url: str, pool: EmulatorPool, users_file: Path, emulator: ManagedProcess, get_user: bool
) -> LoadResult:
    """One repetition of the same sign-ins made directly with boto3 (codes from the outbox, untimed)."""
    plan = bench.plan
    secret = bench.work / "emulator" / "emulator.secret"
    arguments = [
        "sign-in",
        "--endpoint",
        url,
        "--client-id",
        pool.app.client_id,
        "--secret-file",
        str(secret),
        "--threads",
        str(plan.concurrency),
        "--users-file",
        str(users_file),
        "--max-seconds",
        str(plan.seconds * 10 + 30),
    ]
    if get_user:
        arguments.append("--get-user")
    report = bench.boto_load(arguments, {"emulator": emulator}, timeout=plan.seconds * 20 + 120)
    result = boto_result(report, report["phases"], {"emulator": emulator}, "boto3 loop")
    result.extra["observed"] = report.get("observed", {})
    return result
