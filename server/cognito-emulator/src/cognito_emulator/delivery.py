"""How a sign-in code reaches a user: the masked destination Cognito reports and the message text."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .outbox import DeliveryMedium

CODE_PLACEHOLDER = "{####}"
DEFAULT_EMAIL_MESSAGE = "Your sign-in code is {####}."
DEFAULT_EMAIL_SUBJECT = "Your sign-in code"
DEFAULT_SMS_MESSAGE = "Your sign-in code is {####}."


def mask_email(email: str) -> str:
    """``ada@example.com`` -> ``a***@e***``, the shape Cognito puts in ``CODE_DELIVERY_DESTINATION``."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain[:1]}***"


def mask_phone(phone: str) -> str:
    """``+15555550100`` -> ``+*******0100``: every digit but the last four hidden."""
    digits = [c for c in phone if c.isdigit()]
    if len(digits) <= 4:
        return "+" + "".join(digits)
    return "+" + "*" * (len(digits) - 4) + "".join(digits[-4:])


def mask(medium: DeliveryMedium, destination: str) -> str:
    """Mask a destination for its medium."""
    return mask_email(destination) if medium == "EMAIL" else mask_phone(destination)


def render_message(
    medium: DeliveryMedium, code: str, pool_config: Mapping[str, Any]
) -> tuple[str, str | None]:
    """Message text (and email subject) for a sign-in code, from the pool's templates when set.

    [inferred] Which template Cognito uses for passwordless codes: the API documents
    ``EmailMfaConfiguration.Message`` (email) and ``SmsAuthenticationMessage`` (SMS) for "MFA and sign-in"
    codes. moto does not keep ``EmailMfaConfiguration``, so email falls back to the pool's verification
    template (``VerificationMessageTemplate.EmailMessage`` / ``EmailVerificationMessage``); SMS tries
    ``SmsAuthenticationMessage``, then the verification SMS template. Without any, a default that contains
    the code.
    """
    template: str | None
    subject: str | None = None
    if medium == "EMAIL":
        verification = pool_config.get("VerificationMessageTemplate") or {}
        template = _first_with_placeholder(
            verification.get("EmailMessage"), pool_config.get("EmailVerificationMessage")
        )
        subject = (
            verification.get("EmailSubject")
            or pool_config.get("EmailVerificationSubject")
            or DEFAULT_EMAIL_SUBJECT
        )
        template = template or DEFAULT_EMAIL_MESSAGE
    else:
        verification = pool_config.get("VerificationMessageTemplate") or {}
        template = _first_with_placeholder(
            pool_config.get("SmsAuthenticationMessage"),
            verification.get("SmsMessage"),
            pool_config.get("SmsVerificationMessage"),
        )
        template = template or DEFAULT_SMS_MESSAGE
    return template.replace(CODE_PLACEHOLDER, code), subject


def _first_with_placeholder(*candidates: Any) -> str | None:
    # A template without the placeholder would send a message without the code, which Cognito refuses
    # to store in the first place; skip such values rather than deliver a useless message.
    for candidate in candidates:
        if isinstance(candidate, str) and CODE_PLACEHOLDER in candidate:
            return candidate
    return None
