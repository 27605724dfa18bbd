"""The integration hub: named Cognito connections, read from a TOML file and validated once at start-up.

A misconfigured connection is reported when the service starts, naming the field and the fix, not by every
journey that later runs into it. Secrets are read from an environment variable or a file that the config
points at, never from the config itself, and never logged.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from otp_step_service.config.callers import CallerConfig, Callers
from otp_step_service.steps.challenges import budget_windows
from otp_step_service.steps.errors import ConfigurationError
from otp_step_service.steps.model import ConnectionPolicy
from otp_step_service.steps.outcomes import Channel

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConnectionConfig(BaseModel):
    """One `[connections.<name>]` table: the one place each connection setting and its default is defined.
    Field docs are the configuration reference (docs/reference/connections.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: Annotated[
        str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$", description="AWS region, e.g. us-east-1")
    ]
    user_pool_id: Annotated[str, Field(pattern=r"^[\w-]+_[0-9a-zA-Z]+$", description="e.g. us-east-1_AbC123")]
    client_id: Annotated[str, Field(pattern=r"^[\w+]+$", min_length=1, max_length=128)]
    client_secret_env: str | None = Field(None, description="name of the env var holding the client secret")
    client_secret_file: Path | None = Field(None, description="path of a file holding the client secret")
    endpoint_url: str | None = Field(None, description="Cognito endpoint override (the local emulator)")
    api: Literal["public", "admin"] = "public"
    user_enumeration_protection: bool = True
    return_tokens: bool = False
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    # The codes the pool itself judges per session before ending it: not published by AWS [inferred]; 3 is
    # what `make conformance` measures on the emulator and what real pools were seen to allow. max_attempts may
    # not exceed it: beyond it, a real user's session ends (ATTEMPTS_EXHAUSTED) while a decoy's goes on
    # (INVALID_CODE), which tells them apart.
    pool_max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    session_validity_minutes: Annotated[int, Field(ge=3, le=15)] = 3
    # Overrides session_validity_minutes for emulators running with a short code lifetime (tests only).
    session_validity_seconds: Annotated[int | None, Field(ge=1, le=900)] = None
    default_phone_region: Annotated[str | None, Field(pattern=r"^[A-Z]{2}$")] = None
    migration_attributes: tuple[str, ...] = ("*",)
    reveal_identifiers: bool = False
    lockout_threshold: Annotated[int, Field(ge=1, le=100)] = 10
    lockout_window_seconds: Annotated[int, Field(ge=60, le=86400)] = 900
    resend_cooldown_seconds: Annotated[int, Field(ge=0, le=600)] = 30
    send_limit: Annotated[int, Field(ge=1, le=1000)] = 10
    send_window_seconds: Annotated[int, Field(ge=10, le=86400)] = 900
    call_timeout_seconds: Annotated[float, Field(gt=0, le=30)] = 5.0
    connect_timeout_seconds: Annotated[float, Field(gt=0, le=30)] = 2.0
    throttle_retries: Annotated[int, Field(ge=0, le=5)] = 2
    channels: tuple[Channel, ...] = (Channel.EMAIL, Channel.SMS)
    # ISO 3166 regions whose phone numbers may receive codes by SMS ("*": any). Costly number types and
    # non-geographic numbers are refused whatever this says.
    sms_countries: tuple[Annotated[str, Field(pattern=r"^([A-Z]{2}|\*)$")], ...] = ("*",)
    # Codes sent through this connection (all identifiers) per minute / hour / day: the spend circuit breaker.
    # Unset: no cap. Size them to the account's Cognito quota and what a flood may cost.
    send_budget_per_minute: Annotated[int | None, Field(ge=1, le=10_000_000)] = None
    send_budget_per_hour: Annotated[int | None, Field(ge=1, le=10_000_000)] = None
    send_budget_per_day: Annotated[int | None, Field(ge=1, le=10_000_000)] = None
    # The same budgets for each tenant (journey.tenant_id) of a connection several tenants share, so one
    # tenant's flood (or its compromised orchestrator) spends its own budget, not everyone's. A step without a
    # tenant_id counts against the connection's budgets only. Unset: no cap per tenant.
    tenant_send_budget_per_minute: Annotated[int | None, Field(ge=1, le=10_000_000)] = None
    tenant_send_budget_per_hour: Annotated[int | None, Field(ge=1, le=10_000_000)] = None
    tenant_send_budget_per_day: Annotated[int | None, Field(ge=1, le=10_000_000)] = None
    # The pumping velocity guard (as Twilio's Fraud Guard and Stytch do): at most sms_prefix_limit codes by SMS
    # to numbers sharing their first sms_prefix_digits digits (country code included) per window; beyond it
    # that range is blocked until the window ends. None: off.
    sms_prefix_digits: Annotated[int, Field(ge=3, le=12)] = 7
    sms_prefix_limit: Annotated[int | None, Field(ge=1, le=10_000_000)] = 100
    sms_prefix_window_seconds: Annotated[int, Field(ge=60, le=86400)] = 3600
    # Codes per end-user IP address (journey.end_user.ip_address, when the journey supplies it) per window,
    # whatever identifiers they go to. None: off.
    ip_send_limit: Annotated[int | None, Field(ge=1, le=10_000_000)] = 30
    ip_send_window_seconds: Annotated[int, Field(ge=60, le=86400)] = 3600
    # The circuit breaker (steps/circuit_breaker.py): consecutive outages before steps fail fast (0: off),
    # and how long before one probe call is let through.
    circuit_failure_threshold: Annotated[int, Field(ge=0, le=1000)] = 5
    circuit_open_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:4566")
        return value

    @model_validator(mode="after")
    def _one_secret_source(self) -> ConnectionConfig:
        if self.client_secret_env and self.client_secret_file:
            raise ValueError("set client_secret_env or client_secret_file, not both")
        return self

    @model_validator(mode="after")
    def _attempts_within_the_pools(self) -> ConnectionConfig:
        if self.max_attempts > self.pool_max_attempts:
            raise ValueError(
                f"max_attempts = {self.max_attempts} is above the pool's cap per session (pool_max_attempts = "
                f"{self.pool_max_attempts}): lower it, or declare the cap `make conformance` measured on the pool"
            )
        return self

    def read_secret(self, base: Path) -> str | None:
        """The client secret from its env var or file (None when the app client has no secret)."""
        if self.client_secret_env:
            value = os.environ.get(self.client_secret_env)
            if not value:
                raise ValueError(
                    f"client_secret_env: the environment variable {self.client_secret_env} is not set"
                )
            return value.strip()
        if self.client_secret_file:
            path = (
                self.client_secret_file
                if self.client_secret_file.is_absolute()
                else base / self.client_secret_file
            )
            try:
                value = path.read_text().strip()
            except OSError as exc:
                raise ValueError(f"client_secret_file: cannot read {path} ({exc.strerror})") from None
            if not value:
                raise ValueError(f"client_secret_file: {path} is empty")
            return value
        return None


class ConnectionsFile(BaseModel):
    """The whole file: `[connections.<name>]` tables, and the `[callers.<name>]` that may use them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connections: dict[str, ConnectionConfig]
    callers: dict[str, CallerConfig] = {}  # who may use which connection (callers.py)

    @field_validator("connections")
    @classmethod
    def _names(cls, value: dict[str, ConnectionConfig]) -> dict[str, ConnectionConfig]:
        if not value:
            raise ValueError("define at least one [connections.<name>] table")
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"connection name {name!r}: use letters, digits, '_', '.', '-' (max 64)")
        return value

    @model_validator(mode="after")
    def _callers_name_connections(self) -> ConnectionsFile:
        for name, caller in self.callers.items():
            unknown = sorted(set(caller.connections) - set(self.connections) - {"*"})
            if unknown:
                raise ValueError(f"callers.{name}.connections: no connection named {', '.join(unknown)}")
        return self


# A connections file is a few kilobytes per connection; a far bigger one is a mistake (or an attack on a
# writable mount), and parsing it would hold a worker thread for seconds.
MAX_FILE_BYTES = 4 * 1024 * 1024

# What a connection is built from: its validated table and the secret read for it.
Source = tuple[ConnectionConfig, str | None]


@dataclass(frozen=True, slots=True)
class Configuration:
    """The connections file, read once: each connection's table and secret, the callers, and the files a
    change to which means a reload (the file and every client secret file it names)."""

    path: Path
    sources: Mapping[str, Source]
    callers: Callers
    files: tuple[Path, ...]


def load_connections_file(path: Path, max_bytes: int = MAX_FILE_BYTES) -> ConnectionsFile:
    """Parse and validate the file, or raise ConfigurationError listing every problem."""
    try:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
    except FileNotFoundError:
        raise ConfigurationError(
            f"connections file {path} not found: set OTP_STEP_CONNECTIONS or --connections "
            "(`make run` writes one for the local emulator)"
        ) from None
    except OSError as exc:
        raise ConfigurationError(f"connections file {path}: cannot read it ({exc.strerror})") from None
    if len(data) > max_bytes:
        raise ConfigurationError(
            f"connections file {path} is larger than {max_bytes} bytes: refused unread "
            "(a connections file is a few kilobytes per connection)"
        )
    try:
        raw = tomllib.loads(data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"connections file {path} is not valid TOML: {exc}") from None
    try:
        return ConnectionsFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            field = ".".join(str(part) for part in error["loc"])
            problems.append(f"  {field}: {error['msg']}")
        raise ConfigurationError(f"connections file {path} is invalid:\n" + "\n".join(problems)) from None


def watched_files(path: Path, parsed: ConnectionsFile) -> tuple[Path, ...]:
    """The connections file and every client secret file it names."""
    files = [path]
    for config in parsed.connections.values():
        if config.client_secret_file is not None:
            secret = config.client_secret_file
            files.append(secret if secret.is_absolute() else path.parent / secret)
    return tuple(files)


def load_configuration(path: Path, max_bytes: int = MAX_FILE_BYTES) -> Configuration:
    """The one reader of the connections file (start-up, reload, the file watch, the callers): parsed,
    validated, secrets read; ConfigurationError listing every problem. Blocking: off the event loop once
    serving."""
    parsed = load_connections_file(path, max_bytes)
    sources: dict[str, Source] = {}
    problems: list[str] = []
    for name, config in parsed.connections.items():
        try:
            sources[name] = (config, config.read_secret(path.parent))
        except ValueError as exc:
            problems.append(f"  connections.{name}.{exc}")
    if problems:
        raise ConfigurationError(f"connections file {path} is invalid:\n" + "\n".join(problems))
    return Configuration(path, sources, Callers.from_configs(parsed.callers), watched_files(path, parsed))


def policy_from_config(name: str, config: ConnectionConfig) -> ConnectionPolicy:
    """The steps' view of one validated table (the defaults are ConnectionConfig's)."""
    return ConnectionPolicy(
        name=name,
        max_attempts=config.max_attempts,
        session_validity_seconds=config.session_validity_seconds or config.session_validity_minutes * 60,
        user_enumeration_protection=config.user_enumeration_protection,
        return_tokens=config.return_tokens,
        default_phone_region=config.default_phone_region,
        migration_attributes=config.migration_attributes,
        reveal_identifiers=config.reveal_identifiers,
        lockout_threshold=config.lockout_threshold,
        lockout_window_seconds=config.lockout_window_seconds,
        resend_cooldown_seconds=config.resend_cooldown_seconds,
        send_limit=config.send_limit,
        send_window_seconds=config.send_window_seconds,
        sms_countries=config.sms_countries,
        sms_prefix_digits=config.sms_prefix_digits,
        sms_prefix_limit=config.sms_prefix_limit,
        sms_prefix_window_seconds=config.sms_prefix_window_seconds,
        ip_send_limit=config.ip_send_limit,
        ip_send_window_seconds=config.ip_send_window_seconds,
        send_budgets=budget_windows(
            config.send_budget_per_minute, config.send_budget_per_hour, config.send_budget_per_day
        ),
        tenant_send_budgets=budget_windows(
            config.tenant_send_budget_per_minute,
            config.tenant_send_budget_per_hour,
            config.tenant_send_budget_per_day,
        ),
    )
