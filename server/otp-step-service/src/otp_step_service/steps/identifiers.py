"""User identifiers as the orchestrator passes them: an email address or a phone number.

Normalizing before calling Cognito matters twice: a malformed identifier fails fast with INVALID_IDENTIFIER
(the product page's own example) instead of a Cognito round trip, and Generate and Validate key the same
challenge whatever spacing or case the two journey expressions produced.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from .errors import OtpStepError

# The common case, an ASCII dot-atom address on an ordinary domain, checked by one expression: email-validator
# spends ~120 µs per address on IDNA and Unicode rules that such an address cannot trip (the biggest single
# cost of a Generate). Anything else (Unicode, quoted local parts, special-use domains, length limits) goes to
# email-validator; tests/unit/test_identifiers.py holds the two to the same answers.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_EMAIL = re.compile(
    rf"({_ATOM}(?:\.{_ATOM})*)@((?:{_LABEL}\.)+[A-Za-z](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?)"
)
_SPECIAL_USE = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def _plain_email(text: str) -> str | None:
    """The lower-cased address when it is a plain ASCII one email-validator would accept as is, else None."""
    match = _PLAIN_EMAIL.fullmatch(text)
    if match is None or len(match.group(1)) > 64 or len(text) > 254:
        return None
    domain = match.group(2).lower()
    if any(domain == name or domain.endswith("." + name) for name in _SPECIAL_USE):
        return None
    if any(label[2:4] == "--" for label in domain.split(".")):
        return None  # "xn--" and its kin: IDNA rules email-validator applies (RFC 5891 4.2.3.1)
    return text.lower()


class IdentifierKind(enum.StrEnum):
    """What the identifier is."""

    EMAIL = "email"
    PHONE = "phone"


@dataclass(frozen=True, slots=True)
class UserIdentifier:
    """A normalized identifier: lower-cased email, or E.164 phone number."""

    kind: IdentifierKind
    value: str

    @property
    def masked(self) -> str:
        """The identifier masked the way Cognito masks delivery destinations (j***@e***, +*******0100)."""
        return mask_destination(self.value)

    def __repr__(self) -> str:
        # Identifiers are personal data: keep them masked in any debug output.
        return f"UserIdentifier({self.kind.value}, {self.masked})"


class InvalidIdentifierError(OtpStepError, ValueError):
    """The identifier is neither a valid email address nor a valid phone number."""


def parse_identifier(raw: str, default_phone_region: str | None) -> UserIdentifier:
    """Normalize `raw` or raise InvalidIdentifierError with a message safe to return (it never echoes `raw`)."""
    text = raw.strip()
    if not text:
        raise InvalidIdentifierError("the user identifier is empty")
    if "@" in text:
        plain = _plain_email(text)
        if plain is not None:
            return UserIdentifier(IdentifierKind.EMAIL, plain)
        try:
            # No DNS look-up: deliverability is Cognito's business, and the step must not block on DNS.
            email = validate_email(text, check_deliverability=False)
        except EmailNotValidError as exc:
            raise InvalidIdentifierError("the user identifier is not a valid email address") from exc
        # Cognito compares email aliases case-insensitively; lower-casing keeps one challenge key per user.
        return UserIdentifier(IdentifierKind.EMAIL, email.normalized.lower())
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else default_phone_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidIdentifierError(
            "the user identifier is neither an email address nor a phone number"
            + (
                ""
                if default_phone_region
                else " (national numbers need the connection's default_phone_region)"
            )
        ) from exc
    # "Possible" (a plausible length for the country), not "valid": validity depends on numbering-plan
    # metadata that lags new ranges and rejects reserved fictional numbers (+1 555 555 01xx) used in demos.
    # Whether the number reaches a phone is Cognito's (and the user's) business.
    if not phonenumbers.is_possible_number(number):
        raise InvalidIdentifierError("the user identifier is not a valid phone number")
    return UserIdentifier(
        IdentifierKind.PHONE, phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    )


def mask_destination(value: str) -> str:
    """Mask like Cognito's CODE_DELIVERY_DESTINATION: first letters of local part and domain, last 4 digits."""
    if "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain[:1]}***"
    digits = value[-4:]
    return "+" + "*" * max(len(value) - 5, 0) + digits


# Number types that cost the sender per message or are rented by the minute: what SMS pumping aims at.
_COSTLY_TYPES = frozenset(
    {
        phonenumbers.PhoneNumberType.PREMIUM_RATE,
        phonenumbers.PhoneNumberType.SHARED_COST,
        phonenumbers.PhoneNumberType.UAN,
        phonenumbers.PhoneNumberType.PAGER,
        phonenumbers.PhoneNumberType.VOICEMAIL,
        phonenumbers.PhoneNumberType.PERSONAL_NUMBER,
    }
)
# phonenumbers' region for non-geographic numbers (+800, +808, +870, +881, +882, +883, +888, +979).
_NON_GEOGRAPHIC = "001"


def sms_refusal(identifier: UserIdentifier, allowed_countries: tuple[str, ...]) -> str | None:
    """Why codes may not be sent by SMS to this phone identifier, or None when they may.

    Checked before Cognito is asked, from the number alone (no account state: nothing to enumerate). Only a
    phone identifier is the destination itself; an email identifier's SMS goes to the user's own registered
    number, which an attacker does not choose.
    """
    if identifier.kind is not IdentifierKind.PHONE:
        return None
    number = phonenumbers.parse(identifier.value, None)
    # A number valid nowhere (the reserved +1 555 555 01xx of demos) still has its country code's main region.
    region = phonenumbers.region_code_for_number(number) or phonenumbers.region_code_for_country_code(
        number.country_code or 0
    )
    if region in (_NON_GEOGRAPHIC, "ZZ"):
        return "codes are not sent to non-geographic (satellite, international network, premium) numbers"
    if phonenumbers.number_type(number) in _COSTLY_TYPES:
        return "codes are not sent to premium-rate, shared-cost or similar numbers"
    if "*" not in allowed_countries and region not in allowed_countries:
        return f"codes are not sent to numbers of this country ({region}); see the connection's sms_countries"
    return None
