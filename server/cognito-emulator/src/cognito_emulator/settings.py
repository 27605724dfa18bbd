"""Emulator settings: the knobs for behaviour Cognito does not document, validated once.

Every environment variable is defined here once, with its default. CLI flags (``__main__``) and
``POST /_settings`` override the same fields.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

#: Port the emulator listens on when run as a process (LocalStack's customary port).
ENV_PORT = "COGNITO_EMULATOR_PORT"
DEFAULT_PORT = 4566
#: Wrong codes accepted per OTP session before it dies. Cognito does not document a cap.
ENV_ATTEMPT_CAP = "COGNITO_EMULATOR_ATTEMPT_CAP"
#: Code/session lifetime in seconds; unset means the app client's ``AuthSessionValidity`` (minutes).
ENV_CODE_LIFETIME_SECONDS = "COGNITO_EMULATOR_CODE_LIFETIME_SECONDS"
#: Messages kept in the outbox (oldest dropped first).
ENV_OUTBOX_LIMIT = "COGNITO_EMULATOR_OUTBOX_LIMIT"
#: ``LEGACY`` or ``ENABLED``: what an app client without ``PreventUserExistenceErrors`` gets.
ENV_DEFAULT_PREVENT_USER_EXISTENCE_ERRORS = "COGNITO_EMULATOR_DEFAULT_PREVENT_USER_EXISTENCE_ERRORS"
#: ``true`` to send the only available OTP factor straight away instead of SELECT_CHALLENGE.
ENV_AUTO_SELECT_SINGLE_FACTOR = "COGNITO_EMULATOR_AUTO_SELECT_SINGLE_FACTOR"

PreventUserExistence = Literal["LEGACY", "ENABLED"]


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the field and the fix."""


@dataclass(frozen=True)
class EmulatorSettings:
    """Behaviour knobs of the emulator. Immutable: change them with :func:`dataclasses.replace`."""

    attempt_cap: int = 3
    """[inferred] Wrong codes allowed per OTP session. After the last one the session is dead and every
    further answer (even the right code) gets ``NotAuthorizedException``."""

    code_lifetime_seconds: float | None = None
    """Lifetime of a USER_AUTH session and its code. ``None`` uses the app client's ``AuthSessionValidity``
    (minutes, 3-15, default 3) like Cognito; tests set e.g. ``1`` so expiry needs no long wait."""

    outbox_limit: int = 10_000
    """Messages kept in the outbox; older ones are dropped so long load runs do not grow memory."""

    default_prevent_user_existence_errors: PreventUserExistence = "LEGACY"
    """What a client without ``PreventUserExistenceErrors`` gets. The API documents ``LEGACY`` as the
    default (the console proposes ``ENABLED`` for new clients, but that is the console, not the API)."""

    auto_select_single_factor: bool = False
    """[inferred, observed on real pools] When the user has exactly one available factor and no
    ``PREFERRED_CHALLENGE``, go straight to that challenge instead of ``SELECT_CHALLENGE``. Off by default
    because the documented behaviour is ``SELECT_CHALLENGE``."""

    def __post_init__(self) -> None:
        if not isinstance(self.attempt_cap, int) or self.attempt_cap < 1:
            raise SettingsError(f"attempt_cap must be an integer >= 1, got {self.attempt_cap!r}")
        if self.code_lifetime_seconds is not None and (
            not isinstance(self.code_lifetime_seconds, (int, float)) or self.code_lifetime_seconds <= 0
        ):
            raise SettingsError(
                "code_lifetime_seconds must be a positive number of seconds, or None to use the app "
                f"client's AuthSessionValidity; got {self.code_lifetime_seconds!r}"
            )
        if not isinstance(self.outbox_limit, int) or self.outbox_limit < 1:
            raise SettingsError(f"outbox_limit must be an integer >= 1, got {self.outbox_limit!r}")
        if self.default_prevent_user_existence_errors not in ("LEGACY", "ENABLED"):
            raise SettingsError(
                "default_prevent_user_existence_errors must be 'LEGACY' or 'ENABLED', got "
                f"{self.default_prevent_user_existence_errors!r}"
            )
        if not isinstance(self.auto_select_single_factor, bool):
            raise SettingsError(
                f"auto_select_single_factor must be true or false, got {self.auto_select_single_factor!r}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EmulatorSettings:
        """Settings from ``COGNITO_EMULATOR_*`` environment variables, defaults for the rest."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        try:
            if env.get(ENV_ATTEMPT_CAP):
                values["attempt_cap"] = int(env[ENV_ATTEMPT_CAP])
            if env.get(ENV_CODE_LIFETIME_SECONDS):
                values["code_lifetime_seconds"] = float(env[ENV_CODE_LIFETIME_SECONDS])
            if env.get(ENV_OUTBOX_LIMIT):
                values["outbox_limit"] = int(env[ENV_OUTBOX_LIMIT])
        except ValueError as exc:
            raise SettingsError(f"invalid number in a COGNITO_EMULATOR_* variable: {exc}") from exc
        if env.get(ENV_DEFAULT_PREVENT_USER_EXISTENCE_ERRORS):
            values["default_prevent_user_existence_errors"] = env[ENV_DEFAULT_PREVENT_USER_EXISTENCE_ERRORS]
        if env.get(ENV_AUTO_SELECT_SINGLE_FACTOR):
            values["auto_select_single_factor"] = _parse_bool(
                ENV_AUTO_SELECT_SINGLE_FACTOR, env[ENV_AUTO_SELECT_SINGLE_FACTOR]
            )
        return cls(**values)

    def updated(self, changes: Mapping[str, Any]) -> EmulatorSettings:
        """A copy with ``changes`` applied (from JSON); unknown fields are an error naming them."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise SettingsError(f"unknown setting(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **dict(changes))

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return dataclasses.asdict(self)


def _parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")
