"""Service settings: each environment variable defined once here, with its default.

Flags on `python -m otp_step_service serve` override the environment; both are validated before anything
starts listening.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# name: (default, meaning) — the README's configuration table is this list.
ENVIRONMENT: dict[str, tuple[str, str]] = {
    "OTP_STEP_LISTEN": ("127.0.0.1:50051", "gRPC bind address (host:port; [::1]:port for IPv6)"),
    "OTP_STEP_CONNECTIONS": ("connections.toml", "path of the connections file"),
    "OTP_STEP_WORKERS": ("64", "worker threads executing steps (each may wait on one Cognito call)"),
    "OTP_STEP_PROCESSES": (
        "1",
        "server processes sharing the port (SO_REUSEPORT); >1 needs a redis:// store",
    ),
    "OTP_STEP_MAX_CONCURRENT_STEPS": ("256", "in-flight RPCs before new ones get RESOURCE_EXHAUSTED"),
    "OTP_STEP_MAX_MESSAGE_BYTES": ("1048576", "largest request or response message"),
    "OTP_STEP_GRACE_SECONDS": ("10", "on SIGTERM/SIGINT, how long in-flight steps may finish"),
    "OTP_STEP_CHALLENGE_STORE": ("memory", "'memory', or a redis:// URL shared by several instances"),
    "OTP_STEP_SELF_TEST": (
        "warn",
        "connection self-test at start: 'warn', 'strict' (refuse to start), 'off'",
    ),
    "OTP_STEP_LOG_LEVEL": ("INFO", "Python log level"),
}


def env(name: str) -> str:
    """The variable's value, or its documented default."""
    return os.environ.get(name, ENVIRONMENT[name][0])


class SettingsError(ValueError):
    """A setting is invalid; the message names the variable and the fix."""


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Validated service settings."""

    listen: str
    connections_path: Path
    workers: int
    processes: int
    max_concurrent_steps: int
    max_message_bytes: int
    grace_seconds: float
    challenge_store: str
    self_test: str
    log_level: str

    @classmethod
    def from_env(cls, **overrides: str | None) -> ServiceSettings:
        """Settings from the environment, with non-None `overrides` (flag values, by field name) on top."""

        def pick(field: str, var: str) -> str:
            value = overrides.get(field)
            return value if value is not None else env(var)

        def number(field: str, var: str, low: float, high: float) -> float:
            raw = pick(field, var)
            try:
                value = float(raw)
            except ValueError:
                raise SettingsError(f"{var}={raw!r}: expected a number") from None
            if not low <= value <= high:
                raise SettingsError(f"{var}={raw}: must be between {low:g} and {high:g}")
            return value

        workers = int(number("workers", "OTP_STEP_WORKERS", 1, 1024))
        max_steps = int(number("max_concurrent_steps", "OTP_STEP_MAX_CONCURRENT_STEPS", 1, 100_000))
        if max_steps < workers:
            raise SettingsError(
                f"OTP_STEP_MAX_CONCURRENT_STEPS={max_steps} is below OTP_STEP_WORKERS={workers}: "
                "raise it to at least the worker count"
            )
        listen = pick("listen", "OTP_STEP_LISTEN")
        if ":" not in listen:
            raise SettingsError(f"OTP_STEP_LISTEN={listen!r}: expected host:port, e.g. 127.0.0.1:50051")
        self_test = pick("self_test", "OTP_STEP_SELF_TEST")
        if self_test not in {"warn", "strict", "off"}:
            raise SettingsError(f"OTP_STEP_SELF_TEST={self_test!r}: use warn, strict or off")
        store = pick("challenge_store", "OTP_STEP_CHALLENGE_STORE")
        if store != "memory" and not store.startswith(("redis://", "rediss://", "unix://")):
            # The value is not echoed: a mistyped URL may carry a Redis password.
            raise SettingsError(
                "OTP_STEP_CHALLENGE_STORE: use 'memory' or a redis://, rediss:// or unix:// URL"
            )
        processes = int(number("processes", "OTP_STEP_PROCESSES", 1, 64))
        if processes > 1 and store == "memory":
            raise SettingsError(
                f"OTP_STEP_PROCESSES={processes} needs OTP_STEP_CHALLENGE_STORE=redis://...: a journey's "
                "Validate may reach another process than its Generate did"
            )
        if processes > 1 and listen.rsplit(":", 1)[-1] == "0":
            raise SettingsError(
                f"OTP_STEP_PROCESSES={processes} needs a fixed port in OTP_STEP_LISTEN, not 0"
            )
        return cls(
            listen=listen,
            connections_path=Path(pick("connections_path", "OTP_STEP_CONNECTIONS")),
            workers=workers,
            processes=processes,
            max_concurrent_steps=max_steps,
            max_message_bytes=int(number("max_message_bytes", "OTP_STEP_MAX_MESSAGE_BYTES", 4096, 64 << 20)),
            grace_seconds=number("grace_seconds", "OTP_STEP_GRACE_SECONDS", 0, 600),
            challenge_store=store,
            self_test=self_test,
            log_level=pick("log_level", "OTP_STEP_LOG_LEVEL").upper(),
        )
