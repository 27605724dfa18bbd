"""Which verified ID-token claims a step releases, by OAuth scope (OIDC Core §5.4).

Cognito's API-issued ID tokens are not scope-filtered (they carry every readable attribute), so the service
filters them itself: a journey asking for `openid email` must not receive the user's address or birthdate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_SCOPES: tuple[str, ...] = ("openid", "profile", "email")

SCOPE_CLAIMS: Mapping[str, frozenset[str]] = {
    "openid": frozenset({"sub"}),
    "profile": frozenset(
        {
            "name",
            "family_name",
            "given_name",
            "middle_name",
            "nickname",
            "preferred_username",
            "profile",
            "picture",
            "website",
            "gender",
            "birthdate",
            "zoneinfo",
            "locale",
            "updated_at",
        }
    ),
    "email": frozenset({"email", "email_verified"}),
    "phone": frozenset({"phone_number", "phone_number_verified"}),
    "address": frozenset({"address"}),
}


def effective_scopes(requested: Iterable[str]) -> tuple[str, ...]:
    """The requested scopes, or the product's default `openid profile email` when none are given."""
    scopes = tuple(dict.fromkeys(s.strip() for s in requested if s.strip()))
    return scopes or DEFAULT_SCOPES


def release_claims(claims: Mapping[str, Any], scopes: Iterable[str]) -> dict[str, Any]:
    """The subset of `claims` the scopes release; unknown scopes release nothing."""
    allowed: set[str] = set()
    for scope in scopes:
        allowed |= SCOPE_CLAIMS.get(scope, frozenset())
    return {name: value for name, value in claims.items() if name in allowed}
