"""Emulator settings: the knobs for behaviour Cognito does not document, validated once.

Every environment variable is defined here once, with its default. CLI flags (``__main__``) and
``POST /_settings`` override the same fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "COGNITO_EMULATOR_"
#: Port the emulator listens on when run as a process (LocalStack's customary port): the one place it is set.
ENV_PORT = f"{PREFIX}PORT"
DEFAULT_PORT = 4566

PreventUserExistence = Literal["LEGACY", "ENABLED"]


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the field and the fix."""


class EmulatorSettings(BaseSettings):
    """Behaviour knobs of the emulator, each read from ``COGNITO_EMULATOR_<FIELD>``; keyword arguments win.

    Immutable: :meth:`updated` returns a changed copy (``POST /_settings`` uses it).
    """

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="forbid", validate_default=True)

    attempt_cap: int = Field(
        3,
        ge=1,
        description="[inferred] Wrong codes allowed per OTP session. After the last one the session is dead "
        "and every further answer (even the right code) gets NotAuthorizedException.",
    )
    code_lifetime_seconds: float | None = Field(
        None,
        gt=0,
        description="Lifetime of a USER_AUTH session and its code. None uses the app client's "
        "AuthSessionValidity (minutes, 3-15, default 3) like Cognito; tests set e.g. 1 so expiry needs no "
        "long wait.",
    )
    outbox_limit: int = Field(
        10_000,
        ge=1,
        description="Messages kept in the outbox; older ones are dropped so long load runs do not grow memory.",
    )
    default_prevent_user_existence_errors: PreventUserExistence = Field(
        "LEGACY",
        description="What a client without PreventUserExistenceErrors gets. The API documents LEGACY as the "
        "default (the console proposes ENABLED for new clients, but that is the console, not the API).",
    )
    auto_select_single_factor: bool = Field(
        False,
        description="[inferred, observed on real pools] When the user has exactly one available factor and no "
        "PREFERRED_CHALLENGE, go straight to that challenge instead of SELECT_CHALLENGE. Off by default "
        "because the documented behaviour is SELECT_CHALLENGE.",
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(_explain(exc)) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EmulatorSettings:
        """Settings from ``COGNITO_EMULATOR_*`` variables (``os.environ`` by default), defaults for the rest."""
        if environ is None:
            return cls()
        given = {name: environ.get(f"{PREFIX}{name.upper()}") for name in cls.model_fields}
        return cls(**{name: value for name, value in given.items() if value})

    def updated(self, changes: Mapping[str, Any]) -> EmulatorSettings:
        """A copy with ``changes`` applied (from JSON); unknown fields are an error naming them."""
        unknown = sorted(set(changes) - set(type(self).model_fields))
        if unknown:
            raise SettingsError(f"unknown setting(s) {unknown}; known: {sorted(type(self).model_fields)}")
        return type(self)(**{**self.model_dump(), **changes})

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return self.model_dump(mode="json")


def _explain(error: ValidationError) -> str:
    """Each invalid field with pydantic's reason, and the variable that sets it."""
    parts = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "settings"
        parts.append(f"{field} ({PREFIX}{field.upper()}): {problem['msg']}, got {problem.get('input')!r}")
    return "; ".join(parts)
