"""One conformance run end to end: get a pool, run the checks, clean up, build the report.

Modes:

- ``emulator`` (the default): start our emulator on a free loopback port, create a throw-away pool in it,
  read codes from its outbox, compare with the settings it runs with.
- ``create``: a throw-away pool on a real endpoint (AWS), deleted afterwards; codes from the user's source.
- ``named``: the pool and app client the user names; throw-away users and app clients are added and deleted.

Against AWS, boto3's standard credential chain and ``AWS_REGION`` are used; nothing here reads or prints
credentials.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import boto3
import botocore.config

from ..seed import cognito_client
from ..server import EmulatorServer
from ..settings import EmulatorSettings
from .checks import run_checks
from .codes import CodeSource, OutboxCodeSource
from .pool import PoolUnderTest, create_pool, named_pool
from .report import ConformanceReport
from .suite import CallBudget, ConformanceRun, CountedCognito, Redactor, SuiteLimits

Mode = Literal["emulator", "create", "named"]


class ConformanceSetupError(RuntimeError):
    """The run cannot start (missing region, credentials, pool or code source); the message says what to do."""


@dataclass(frozen=True)
class ConformanceOptions:
    """Everything one run needs. ``client_secret`` is a secret (never reported)."""

    mode: Mode = "emulator"
    region: str | None = None
    endpoint_url: str | None = None
    """An endpoint override for ``create`` / ``named`` (tests point it at an emulator); None = AWS."""
    user_pool_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    email: str = "conformance@example.com"
    phone_number: str | None = None
    code_source: CodeSource | None = None
    emulator_settings: EmulatorSettings = field(default_factory=EmulatorSettings)
    """``emulator`` mode: the settings of the emulator the tool starts (and compares with)."""
    limits: SuiteLimits = field(default_factory=SuiteLimits)

    def __repr__(self) -> str:
        return f"ConformanceOptions(mode={self.mode!r}, region={self.region!r}, pool={self.user_pool_id!r})"


@dataclass
class ConformanceOutcome:
    """The report and the redactor that must vet it before it is written."""

    report: ConformanceReport
    redactor: Redactor


def run_conformance(options: ConformanceOptions) -> ConformanceOutcome:
    """Run the suite as ``options`` say and return the report (not yet written)."""
    if options.mode == "emulator":
        with EmulatorServer(host="127.0.0.1", port=0, settings=options.emulator_settings) as emulator:
            client = cognito_client(emulator.endpoint_url, options.region or "us-east-1", _no_retries())
            return _run(
                options,
                client,
                options.region or "us-east-1",
                emulator.endpoint_url,
                OutboxCodeSource(emulator.endpoint_url),
                expected=options.emulator_settings,
                emulator_control_url=emulator.endpoint_url,
            )
    region = options.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise ConformanceSetupError("set AWS_REGION (or --region) to run against a real pool")
    session = boto3.session.Session(region_name=region)
    if session.get_credentials() is None:
        raise ConformanceSetupError(
            "no AWS credentials in boto3's standard chain (environment, ~/.aws, SSO, instance role)"
        )
    if options.code_source is None:
        raise ConformanceSetupError("give a code source: --code-command or --mailbox-url")
    if options.mode == "named" and not (options.user_pool_id and options.client_id):
        raise ConformanceSetupError("named mode needs --user-pool-id and --client-id")
    client = session.client("cognito-idp", endpoint_url=options.endpoint_url, config=_no_retries())
    # Compared with the emulator's defaults: a failed inferred rule then names the knob that fits this pool.
    return _run(
        options, client, region, options.endpoint_url, options.code_source, expected=EmulatorSettings()
    )


def _run(
    options: ConformanceOptions,
    client: Any,
    region: str,
    endpoint_url: str | None,
    codes: CodeSource,
    *,
    expected: EmulatorSettings,
    emulator_control_url: str | None = None,
) -> ConformanceOutcome:
    started = time.monotonic()
    budget = CallBudget(options.limits.max_calls, options.limits.timeout_seconds)
    cognito = CountedCognito(client, budget)
    pool: PoolUnderTest
    if options.mode == "named":
        assert options.user_pool_id is not None  # checked by the caller
        assert options.client_id is not None
        pool = named_pool(
            cognito, region, endpoint_url, options.user_pool_id, options.client_id, options.client_secret
        )
    else:
        pool = create_pool(cognito, region, endpoint_url)
    run = ConformanceRun(
        pool=pool,
        codes=codes,
        expected=expected,
        budget=budget,
        limits=options.limits,
        emulator_control_url=emulator_control_url,
        email=options.email,
        phone_number=options.phone_number,
    )
    if pool.main_client.secret:
        run.redactor.remember(pool.main_client.secret)
    try:
        results = run_checks(run)
    finally:
        budget.closing = True
        left_behind = pool.clean_up()
    codes_per_user = {role: run.codes_sent.get(user.username, 0) for role, user in sorted(pool.users.items())}
    report = ConformanceReport(
        target={
            "mode": options.mode,
            "endpoint": endpoint_url or f"https://cognito-idp.{region}.amazonaws.com",
            "region": region,
            "user pool": pool.user_pool_id + (" (throw-away, deleted)" if pool.created_pool else ""),
            "app client": pool.main_client.client_id,
            "codes from": codes.describe(),
            "compared with": _settings_summary(expected),
        },
        results=results,
        calls=budget.calls,
        seconds=time.monotonic() - started,
        codes_per_user=codes_per_user,
        left_behind=left_behind,
    )
    return ConformanceOutcome(report, run.redactor)


def _settings_summary(settings: EmulatorSettings) -> str:
    return (
        f"emulator attempt_cap={settings.attempt_cap}, "
        f"auto_select_single_factor={str(settings.auto_select_single_factor).lower()}, "
        f"default_prevent_user_existence_errors={settings.default_prevent_user_existence_errors}"
    )


def _no_retries() -> botocore.config.Config:
    # One request per call: a retried InitiateAuth could send a second code, and the budget counts calls.
    return botocore.config.Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=20)
