"""Callers: who may call the service, which connections each may use, and the tenant it acts for.

A `[callers.<name>]` table in the connections file names a caller by the identities it authenticates with (its
client certificate's identity, or its bearer token's subject) and lists its connections. A caller bound to a
tenant may only run journeys of that tenant. Identities are compared exactly; an authenticated identity that
no table names is not a caller (PERMISSION_DENIED).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from otp_step_service.steps.challenges import budget_windows
from otp_step_service.steps.errors import ConfigurationError

ANY_CONNECTION = "*"


class CallerConfig(BaseModel):
    """One `[callers.<name>]` table (the docs, "TLS and authentication")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    certificate_identities: tuple[str, ...] = Field(
        (),
        description="client-certificate identities: a URI SAN (spiffe://...), else a DNS SAN or subject CN",
    )
    token_subjects: tuple[str, ...] = Field((), description="bearer-token subjects (the `sub` claim)")
    connections: tuple[str, ...] = Field(description="connection names this caller may use; '*' for all")
    tenant: str | None = Field(None, description="set: journeys must carry this journey.tenant_id")
    steps_per_second: Annotated[float | None, Field(gt=0, le=100_000)] = Field(
        None, description="this caller's steps per second (overrides OTP_STEP_STEPS_PER_SECOND_PER_CALLER)"
    )
    # Codes this caller may have sent per minute / hour / day, over all its connections: one orchestrator
    # (or its stolen credential) cannot spend the whole account's budget. Unset: no cap per caller.
    send_budget_per_minute: Annotated[int | None, Field(ge=1, le=10_000_000)] = None
    send_budget_per_hour: Annotated[int | None, Field(ge=1, le=10_000_000)] = None
    send_budget_per_day: Annotated[int | None, Field(ge=1, le=10_000_000)] = None

    @model_validator(mode="after")
    def _identified(self) -> CallerConfig:
        if not self.certificate_identities and not self.token_subjects:
            raise ValueError("name at least one certificate_identities or token_subjects entry")
        if not self.connections:
            raise ValueError("list the connections this caller may use ('*' for all)")
        return self


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated, known caller."""

    name: str
    connections: frozenset[str]
    tenant: str | None
    steps_per_second: float | None
    send_budgets: tuple[tuple[int, int], ...] = ()  # (codes, window seconds), over all its connections

    def may_use(self, connection: str) -> bool:
        """Whether this caller may run steps on `connection`."""
        return ANY_CONNECTION in self.connections or connection in self.connections


@dataclass(frozen=True, slots=True)
class Callers:
    """The known callers, by the identities they authenticate with."""

    by_certificate: Mapping[str, Caller]
    by_token_subject: Mapping[str, Caller]

    @classmethod
    def from_configs(cls, configs: Mapping[str, CallerConfig]) -> Callers:
        """Index the tables; an identity claimed by two callers is a configuration error."""
        by_certificate: dict[str, Caller] = {}
        by_subject: dict[str, Caller] = {}
        for name, config in configs.items():
            caller = Caller(
                name,
                frozenset(config.connections),
                config.tenant,
                config.steps_per_second,
                budget_windows(
                    config.send_budget_per_minute, config.send_budget_per_hour, config.send_budget_per_day
                ),
            )
            for index, identities in (
                (by_certificate, config.certificate_identities),
                (by_subject, config.token_subjects),
            ):
                for identity in identities:
                    if identity in index:
                        raise ConfigurationError(
                            f"callers.{name}: identity {identity!r} is already caller {index[identity].name!r}"
                        )
                    index[identity] = caller
        return cls(by_certificate, by_subject)

    def names(self) -> dict[str, Caller]:
        """Every caller, by name."""
        return {c.name: c for c in (*self.by_certificate.values(), *self.by_token_subject.values())}

    def __len__(self) -> int:
        return len({c.name for c in (*self.by_certificate.values(), *self.by_token_subject.values())})
