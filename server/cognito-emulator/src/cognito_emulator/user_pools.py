"""The user pool as USER_AUTH sees it: users found by any sign-in name (indexed), the first factors a pool
allows, and the challenges a user can take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moto.cognitoidp.models import (
    DEFAULT_USER_POOL_CONFIG,
    CognitoIdpUser,
    CognitoIdpUserPool,
)

from .outbox import DeliveryMedium

USER_AUTH = "USER_AUTH"
SELECT_CHALLENGE = "SELECT_CHALLENGE"
EMAIL_OTP = "EMAIL_OTP"
SMS_OTP = "SMS_OTP"
PASSWORD = "PASSWORD"
#: Order of ``AvailableChallenges`` (the order of the reference's example).
CHALLENGE_ORDER = (EMAIL_OTP, SMS_OTP, PASSWORD)
#: Challenge names this module answers; other names go to moto.
OWN_CHALLENGES = frozenset({SELECT_CHALLENGE, EMAIL_OTP, SMS_OTP, PASSWORD})
#: [doc] A pool without ``SignInPolicy`` allows passwords only.
DEFAULT_FIRST_AUTH_FACTORS = (PASSWORD,)
#: [obs] Passwordless sign-in codes have 8 digits (MFA and sign-up codes have 6).
CODE_DIGITS = 8
DEFAULT_AUTH_SESSION_VALIDITY_MINUTES = 3
#: Pool settings UpdateUserPool cannot change.
IMMUTABLE_POOL_SETTINGS = ("UsernameAttributes", "AliasAttributes", "UsernameConfiguration")


@dataclass(frozen=True)
class OtpFactor:
    """An OTP first factor (EMAIL_OTP, SMS_OTP): how its challenge reaches the user."""

    medium: DeliveryMedium
    attribute: str
    verified_attribute: str
    code_parameter: str


CHANNELS: dict[str, OtpFactor] = {
    EMAIL_OTP: OtpFactor("EMAIL", "email", "email_verified", "EMAIL_OTP_CODE"),
    SMS_OTP: OtpFactor("SMS", "phone_number", "phone_number_verified", "SMS_OTP_CODE"),
}


class IndexedUserPool(CognitoIdpUserPool):
    """moto's user pool with AWS defaults it lacks, O(1) username lookup and AWS-like ID token claims."""

    def update_extended_config(self, extended_config: dict[str, Any]) -> None:
        """moto's config update, then keep and fill what AWS keeps and fills."""
        previous: dict[str, Any] = getattr(self, "extended_config", None) or {}
        super().update_extended_config(extended_config)
        # [doc] UpdateUserPool resets what it is not given, except settings fixed at creation; moto resets
        # those too, which would silently turn off alias sign-in after any UpdateUserPool.
        for name in IMMUTABLE_POOL_SETTINGS:
            if name in previous and name not in extended_config:
                self.extended_config[name] = previous[name]
        # moto replaces the whole ``Policies`` object, so a pool created with only a SignInPolicy would
        # lose its password policy; AWS keeps the default one.
        policies = dict(self.extended_config.get("Policies") or {})
        policies.setdefault("PasswordPolicy", DEFAULT_USER_POOL_CONFIG["Policies"]["PasswordPolicy"])
        policies.setdefault("SignInPolicy", {"AllowedFirstAuthFactors": list(DEFAULT_FIRST_AUTH_FACTORS)})
        self.extended_config["Policies"] = policies
        # [doc] New pools are on the Essentials feature plan unless told otherwise.
        self.extended_config.setdefault("UserPoolTier", "ESSENTIALS")

    def _get_user(self, username: str) -> CognitoIdpUser:
        # moto scans every user (rebuilding each attribute dict) before trying the key, on every token it
        # signs; try the key first and scan prebuilt attribute dicts only when needed.
        user: CognitoIdpUser | None = self.users.get(username)
        if user is not None:
            return user
        for attribute in self.extended_config.get("UsernameAttributes") or ():
            for candidate in self.users.values():
                if candidate.attribute_lookup.get(attribute) == username:
                    return candidate
        # moto's signature says CognitoIdpUser, but it returns None for "no such user" and callers check.
        return None  # type: ignore[return-value]

    def get_user_extra_data_by_client_id(self, client_id: str, username: str) -> dict[str, Any]:
        """ID token attribute claims: the client's ``ReadAttributes``, or all attributes when unset.

        [doc] An app client without ``ReadAttributes`` can read every attribute, and the ID token carries
        them (moto puts none). ``*_verified`` claims are JSON booleans in Cognito's tokens.
        """
        user: CognitoIdpUser | None = self._get_user(username)
        if user is None:
            return {}
        client = self.clients.get(client_id)
        readable = client.get_readable_fields() if client is not None else []
        attributes: dict[str, Any] = dict(user.attribute_lookup)
        attributes.pop("sub", None)
        if readable:
            attributes = {name: value for name, value in attributes.items() if name in readable}
        for name in ("email_verified", "phone_number_verified"):
            if name in attributes:
                attributes[name] = str(attributes[name]).lower() == "true"
        return attributes


def find_user(pool: CognitoIdpUserPool, username: str) -> CognitoIdpUser | None:
    """The user a sign-in ``USERNAME`` names: the username itself, a username attribute, or an alias.

    [doc] With ``UsernameAttributes`` the email / phone number is the sign-in name. With
    ``AliasAttributes`` an email or phone alias works only once verified; ``preferred_username`` always.
    """
    user: CognitoIdpUser | None = pool.users.get(username)
    if user is not None:
        return user
    config = pool.extended_config
    username_attributes = config.get("UsernameAttributes") or ()
    alias_attributes = config.get("AliasAttributes") or ()
    if not username_attributes and not alias_attributes:
        return None
    folded = username.lower()
    for candidate in pool.users.values():
        attrs = candidate.attribute_lookup
        for attribute in username_attributes:
            if _same_sign_in_name(attribute, attrs.get(attribute), username, folded):
                return candidate
        for attribute in alias_attributes:
            if not _same_sign_in_name(attribute, attrs.get(attribute), username, folded):
                continue
            if attribute == "preferred_username" or str(attrs.get(f"{attribute}_verified")).lower() == "true":
                return candidate
    return None


def _same_sign_in_name(attribute: str, value: Any, username: str, folded: str) -> bool:
    if not isinstance(value, str):
        return False
    # Cognito matches email sign-in names case-blind; other attributes exactly.
    return value.lower() == folded if attribute == "email" else value == username


def allowed_first_factors(pool: CognitoIdpUserPool) -> tuple[str, ...]:
    """``Policies.SignInPolicy.AllowedFirstAuthFactors`` of the pool, ``("PASSWORD",)`` when unset."""
    policies = pool.extended_config.get("Policies") or {}
    factors = (policies.get("SignInPolicy") or {}).get("AllowedFirstAuthFactors")
    return tuple(factors) if factors else DEFAULT_FIRST_AUTH_FACTORS


def available_challenges(pool: CognitoIdpUserPool, user: CognitoIdpUser) -> list[str]:
    """The first factors this user can use in this pool, in :data:`CHALLENGE_ORDER`."""
    allowed = allowed_first_factors(pool)
    # [doc] Passwordless first factors need MFA not to be required on the pool.
    otp_possible = pool.mfa_config != "ON"
    result = []
    for challenge in CHALLENGE_ORDER:
        if challenge not in allowed:
            continue
        if challenge in CHANNELS:
            if otp_possible and user.attribute_lookup.get(CHANNELS[challenge].attribute):
                result.append(challenge)
        elif user.password:  # [inferred] PASSWORD is offered only to users who have one
            result.append(challenge)
    return result
