"""Identifier normalization: the fast path for plain addresses gives email-validator's answer, always."""

from __future__ import annotations

import string

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st
from otp_step_service.steps.identifiers import InvalidIdentifierError, parse_identifier

_LOCAL = st.text(string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-.\"@ ", min_size=0, max_size=70)
_DOMAIN = st.text(string.ascii_letters + string.digits + "-.", min_size=0, max_size=80)
_TLDS = st.sampled_from(["com", "org", "io", "test", "localhost", "local", "c0m", "1com", "x", "example"])


def _reference(text: str) -> str | None:
    """email-validator's verdict on the identifier as the step sees it (surrounding blanks trimmed)."""
    try:
        return validate_email(text.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


def _ours(text: str) -> str | None:
    try:
        return parse_identifier(text, None).value
    except InvalidIdentifierError:
        return None


@settings(max_examples=3000, deadline=None)
@given(local=_LOCAL, domain=_DOMAIN, tld=_TLDS)
def test_any_ascii_address_is_judged_as_email_validator_judges_it(local: str, domain: str, tld: str) -> None:
    text = f"{local}@{domain}.{tld}" if domain else f"{local}@{tld}"
    assert _ours(text) == _reference(text)


@pytest.mark.parametrize(
    "text",
    [
        "Ada@Example.COM",
        "a.b+tag@sub.example.co.uk",
        "ada@localhost",
        "ada@mail.test",
        "x" * 65 + "@example.com",
        "ada@" + "a" * 64 + ".com",
        "ada..lovelace@example.com",
        ".ada@example.com",
        "ada@-example.com",
        "ada@example.123",
        "ädä@example.com",
        '"quoted"@example.com',
    ],
)
def test_edge_addresses_match_email_validator(text: str) -> None:
    assert _ours(text) == _reference(text)
