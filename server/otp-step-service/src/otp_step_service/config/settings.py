"""Service settings: each environment variable defined once here (pydantic-settings), with its default.

Flags on `python -m otp_step_service serve` override the environment; both are validated before anything
starts listening, and an error names the variable and the fix. The docs' settings reference (docs/reference/settings.md) is generated from this class.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from otp_step_service.steps.errors import ConfigurationError

PREFIX = "OTP_STEP_"
# The service's address by default: loopback only, so a bare start exposes nothing (the demo uses it too).
DEFAULT_LISTEN = "127.0.0.1:50051"


class SettingsError(ConfigurationError, ValueError):
    """A setting is invalid; the message names the variable and the fix."""


def _loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    return host in {"127.0.0.1", "localhost", "::1"} or host.startswith("127.")


class ServiceSettings(BaseSettings):
    """Validated service settings, from OTP_STEP_* variables (and flags, which override them)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="forbid", populate_by_name=True)

    listen: str = Field(DEFAULT_LISTEN, description="gRPC bind address (host:port; [::1]:port for IPv6)")
    connections_path: Path = Field(
        Path("connections.toml"),
        validation_alias="OTP_STEP_CONNECTIONS",
        description="path of the connections file",
    )
    processes: Annotated[int, Field(ge=1, le=64)] = Field(
        1, description="server processes sharing the port (SO_REUSEPORT); >1 needs a redis:// store"
    )
    max_concurrent_steps: Annotated[int, Field(ge=1, le=100_000)] = Field(
        256, description="steps in flight per process before new ones get RESOURCE_EXHAUSTED"
    )
    max_steps_per_caller: Annotated[int, Field(ge=1, le=100_000)] = Field(
        128,
        description="steps in flight per caller (connection until callers authenticate) before RESOURCE_EXHAUSTED",
    )
    max_streams_per_connection: Annotated[int, Field(ge=1, le=10_000)] = Field(
        100,
        description="concurrent HTTP/2 streams one client connection may open (SETTINGS_MAX_CONCURRENT_STREAMS)",
    )
    max_open_rpcs: Annotated[int, Field(ge=16, le=1_000_000)] = Field(
        4096,
        description="open RPCs of any kind (idle streams included) before gRPC answers RESOURCE_EXHAUSTED",
    )
    max_open_rpcs_per_caller: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        1024, description="open unary RPCs (idle streams included) per caller before RESOURCE_EXHAUSTED"
    )
    idle_stream_seconds: Annotated[float, Field(gt=0, le=300)] = Field(
        5.0,
        description="a stream that sends no request message within this long is ended (DEADLINE_EXCEEDED)",
    )
    max_message_bytes: Annotated[int, Field(ge=4096, le=64 << 20)] = Field(
        1 << 20, description="largest request or response message"
    )
    max_connection_age_seconds: Annotated[float, Field(ge=0, le=86_400)] = Field(
        0.0,
        description="a client connection older than this is asked to reconnect (GOAWAY), so after a scale-out "
        "clients resolve the name again and reach new instances; 0: never (a fleet: e.g. 300)",
    )
    max_connection_age_grace_seconds: Annotated[float, Field(ge=0, le=3600)] = Field(
        30.0, description="how long calls open on a connection past its maximum age may still finish"
    )
    min_client_ping_seconds: Annotated[float, Field(ge=1, le=3600)] = Field(
        20.0,
        description="the most often a client may send keepalive pings on a connection (with no call open too); "
        "more often is answered with GOAWAY too_many_pings (the shipped client config pings every 30 s)",
    )
    grace_seconds: Annotated[float, Field(ge=0, le=600)] = Field(
        10.0, description="on SIGTERM/SIGINT, how long in-flight steps may finish"
    )
    drain_notice_seconds: Annotated[float, Field(ge=0, le=300)] = Field(
        0.0,
        description="on SIGTERM/SIGINT, how long health reports NOT_SERVING while new calls are still served "
        "(so load balancers stop sending before the port closes)",
    )
    challenge_store: str = Field(
        "memory",
        description="'memory', or a URL shared by several instances: redis://, rediss://, unix:// (one Redis), "
        "redis+sentinel:// or rediss+sentinel:// (host:port,.../<master name>), redis+cluster:// or "
        "rediss+cluster:// (host:port,...)",
    )
    challenge_store_password_file: Path | None = Field(
        None,
        description="file holding the Redis password (of the URL's user, else the default user); re-read when "
        "it changes, used from the next connection on; wins over a password in the URL",
    )
    challenge_store_ca_file: Path | None = Field(
        None, description="rediss: PEM CA bundle the Redis (and sentinel) certificates must chain to"
    )
    challenge_store_cert_file: Path | None = Field(
        None, description="rediss: PEM client certificate, when Redis requires one (tls-auth-clients)"
    )
    challenge_store_key_file: Path | None = Field(
        None, description="rediss: PEM private key of OTP_STEP_CHALLENGE_STORE_CERT_FILE"
    )
    store_min_replicas: Annotated[int, Field(ge=0, le=16)] | None = Field(
        None,
        description="replicas that must hold each security counter (sends, wrong codes: WAIT after the script) "
        "before Cognito is asked; unset: 1 when the primary has replicas, else 0; 0: off",
    )
    challenge_keys_file: Path | None = Field(
        None,
        description="with a redis store: file of '<key id> <base64 32 bytes>' lines sealing Cognito sessions "
        "at rest (first line seals, all open)",
    )
    self_test: Literal["warn", "strict", "off"] = Field(
        "warn", description="connection self-test at start: 'warn', 'strict' (refuse to start), 'off'"
    )
    reload_poll_seconds: Annotated[float, Field(ge=0, le=3600)] = Field(
        2.0,
        description="how often the connections file and its secret files are checked for changes (reloaded as "
        "on SIGHUP); 0: only SIGHUP reloads",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Python log level")
    log_format: Literal["json", "text"] = Field(
        "json", description="log lines on stderr: 'json' (one object a line) or 'text' (key=value)"
    )
    # Transport security and caller authentication (docs: "TLS and authentication").
    tls_cert: Path | None = Field(
        None, description="PEM certificate chain of the gRPC port (reloaded on change)"
    )
    tls_key: Path | None = Field(None, description="PEM private key of the gRPC port (reloaded on change)")
    tls_client_ca: Path | None = Field(
        None, description="PEM CA bundle: require and verify client certificates (mTLS)"
    )
    allow_insecure: bool = Field(False, description="allow plaintext beyond loopback (logged as a warning)")
    token_issuer: str | None = Field(None, description="bearer tokens: the issuer (iss) they must name")
    token_audience: str | None = Field(None, description="bearer tokens: the audience (aud) they must name")
    token_jwks_url: str | None = Field(None, description="bearer tokens: the issuer's JWKS address")
    token_access_client_ids: str = Field(
        "",
        description="bearer tokens: also accept this issuer's Cognito access tokens (no aud; token_use "
        "'access') whose client_id is one of these comma-separated app client ids; empty: off",
    )
    token_algorithms: str = Field("RS256,ES256", description="bearer tokens: accepted signing algorithms")
    token_cache_seconds: Annotated[float, Field(ge=0, le=3600)] = Field(
        300.0,
        description="bearer tokens: how long a verified token is remembered at most (never past its exp); 0: off",
    )
    steps_per_second_per_caller: Annotated[float, Field(ge=0, le=100_000)] = Field(
        0,
        description="steps per second per caller before RESOURCE_EXHAUSTED (shared in Redis with a Redis store, "
        "else per process); 0: off",
    )
    metrics_listen: str = Field(
        "", description="Prometheus scrape endpoint (host:port, its own port); empty: no metrics are recorded"
    )
    health_listen: str = Field(
        "",
        description="a plaintext port serving grpc.health.v1 only (host:port), for probes that cannot speak "
        "TLS, such as Kubernetes' gRPC probes; empty: health is served on OTP_STEP_LISTEN only",
    )
    metrics_allow_remote: bool = Field(
        False,
        description="allow the (plaintext) scrape endpoint beyond loopback (logged as a warning); "
        "OTP_STEP_ALLOW_INSECURE allows it too",
    )

    @field_validator("metrics_listen", "health_listen")
    @classmethod
    def _metrics_host_port(cls, value: str) -> str:
        if value:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError("expected host:port, e.g. 0.0.0.0:9464, or empty for none")
        return value

    @model_validator(mode="after")
    def _metrics_port_per_process(self) -> ServiceSettings:
        # With several processes, process i serves its metrics on the port after process i-1's.
        if self.metrics_listen and self.processes > 1:
            port = int(self.metrics_listen.rpartition(":")[2])
            if port and port + self.processes - 1 > 65535:
                raise ValueError(
                    f"metrics_listen: {self.processes} processes need ports {port}-{port + self.processes - 1}"
                )
        return self

    def for_process(self, index: int) -> ServiceSettings:
        """The settings of server process `index` (0-based) of OTP_STEP_PROCESSES: each serves its own
        metrics, on the metrics port plus its index (port 0: a free port each), because a registry lives in
        one process and the processes share nothing but the gRPC port."""
        if not self.metrics_listen or index == 0:
            return self
        host, _, port = self.metrics_listen.rpartition(":")
        shifted = int(port) + index if int(port) else 0
        return self.model_copy(update={"metrics_listen": f"{host}:{shifted}"})

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected host:port, e.g. {DEFAULT_LISTEN}")
        return value

    @field_validator("challenge_store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        from otp_step_service.config.store_url import parse_store_url

        parse_store_url(value)  # its errors never echo the value: a mistyped URL may carry a Redis password
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSettings:
        if self.processes > 1 and self.challenge_store == "memory":
            raise ValueError(
                f"OTP_STEP_PROCESSES={self.processes} needs OTP_STEP_CHALLENGE_STORE=redis://...: a journey's "
                "Validate may reach another process than its Generate did"
            )
        if (self.challenge_store_cert_file is None) != (self.challenge_store_key_file is None):
            raise ValueError(
                "OTP_STEP_CHALLENGE_STORE_CERT_FILE and OTP_STEP_CHALLENGE_STORE_KEY_FILE go together: set both"
            )
        if self.challenge_store != "memory" and self.challenge_keys_file is None:
            raise ValueError(
                "a shared challenge store needs OTP_STEP_CHALLENGE_KEYS_FILE: Cognito sessions are sealed at rest"
            )
        if self.processes > 1 and self.listen.rsplit(":", 1)[-1] == "0":
            raise ValueError(
                f"OTP_STEP_PROCESSES={self.processes} needs a fixed port in OTP_STEP_LISTEN, not 0"
            )
        if self.max_steps_per_caller > self.max_concurrent_steps:
            raise ValueError(
                "OTP_STEP_MAX_STEPS_PER_CALLER is above OTP_STEP_MAX_CONCURRENT_STEPS: lower it to at most that"
            )
        if self.max_open_rpcs_per_caller >= self.max_open_rpcs:
            raise ValueError(
                "OTP_STEP_MAX_OPEN_RPCS_PER_CALLER must be below OTP_STEP_MAX_OPEN_RPCS, or one caller can fill it"
            )
        from otp_step_service.config.exposure import check_exposure

        check_exposure(self)
        return self

    @property
    def listens_on_loopback(self) -> bool:
        """Whether only this machine can reach the port."""
        return _loopback(self.listen)

    @property
    def metrics_on_loopback(self) -> bool:
        """Whether only this machine can reach the scrape endpoint (True without one)."""
        return not self.metrics_listen or _loopback(self.metrics_listen)

    @classmethod
    def from_env(cls, **overrides: Any) -> ServiceSettings:
        """Settings from the environment, with non-None `overrides` (flag values, by field name) on top."""
        given = {name: value for name, value in overrides.items() if value is not None}
        try:
            return cls(**given)
        except ValidationError as exc:
            raise SettingsError(_explain(exc)) from None


def variable(field: str) -> str:
    """The environment variable of a settings field."""
    info = ServiceSettings.model_fields[field]
    alias = info.validation_alias
    return alias if isinstance(alias, str) else PREFIX + field.upper()


def documented() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting: the docs' settings reference and `--help`."""
    rows = []
    for name, info in ServiceSettings.model_fields.items():
        rows.append((variable(name), str(info.default), info.description or ""))
    return rows


def _explain(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        where = error["loc"][0] if error["loc"] else ""
        name = variable(str(where)) if where in ServiceSettings.model_fields else "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{name}: {message}")
    return "; ".join(problems)


def deprecated_variables() -> list[str]:
    """Variables of earlier versions that no longer do anything (reported at start-up)."""
    return [name for name in ("OTP_STEP_WORKERS",) if name in os.environ]


def mistyped_variables() -> list[tuple[str, str]]:
    """(variable, the setting it probably means) for OTP_STEP_* variables that are no setting but look like one:
    a mistyped limit would otherwise fall back to its default without a word. Variables the client and the
    examples read (OTP_STEP_TARGET, ...) are not settings and are not close to one, so they pass."""
    known = {variable(name) for name in ServiceSettings.model_fields}
    found = []
    for name in sorted(os.environ):
        if name.startswith(PREFIX) and name not in known and name != "OTP_STEP_WORKERS":
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.9)
            if close:
                found.append((name, close[0]))
    return found
