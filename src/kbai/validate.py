"""Checks on text a person typed: names and emails. Raise VALIDATION with a message that says what to fix."""

from __future__ import annotations

import re
import unicodedata

from kbai import errors
from kbai.errors import KbaiError
from kbai.tokenformat import redact

# Control, format (bidi overrides, zero-width), surrogate, private-use, unassigned, line/para separators.
_FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
# Local part: RFC 5322 dot-atom (no spaces, quotes, <>, (), [], commas, semicolons or backslashes), 1-64 chars.
_EMAIL_RE = re.compile(
    r"(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)


def clean_name(value: object, field: str = "name", max_length: int = 100) -> str:
    """``value`` trimmed; 1..max_length chars, printable only."""
    if not isinstance(value, str):
        raise KbaiError(errors.VALIDATION, detail=f"{field} must be a string.")
    trimmed = value.strip()
    if not trimmed:
        raise KbaiError(errors.VALIDATION, detail=f"{field} must not be empty.")
    if len(trimmed) > max_length:
        raise KbaiError(
            errors.VALIDATION, detail=f"{field} is {len(trimmed)} characters long; the most is {max_length}."
        )
    if redact(trimmed) != trimmed:
        raise KbaiError(errors.VALIDATION, detail=f"{field} must not contain a token (kbai_pk_...).")
    for ch in trimmed:
        if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
            raise KbaiError(
                errors.VALIDATION,
                detail=f"{field} contains an invisible or control character (U+{ord(ch):04X}); use visible text only.",
            )
    return trimmed


def clean_email(value: object) -> str:
    if not isinstance(value, str):
        raise KbaiError(errors.VALIDATION, detail="email must be a string.")
    email = value.strip().lower()
    if len(email) > 254 or not email.isascii() or not _EMAIL_RE.fullmatch(email):
        raise KbaiError(errors.VALIDATION, detail="email must be an address like name@example.com.")
    return email


def clean_password(value: object, min_length: int) -> str:
    if not isinstance(value, str) or len(value) < min_length or len(value) > 1024:
        raise KbaiError(errors.VALIDATION, detail=f"password must be {min_length} to 1024 characters long.")
    return value


def clean_external_id(value: object, field: str = "external_id") -> str:
    """The host product's id of a tenant or user: 1-200 visible characters, kept as given (trimmed)."""
    return clean_name(value, field, max_length=200)


def clean_text(value: object, field: str, max_length: int) -> str | None:
    """Free text (a description): trimmed, at most ``max_length`` chars, line breaks and tabs allowed but no
    other control or invisible character, and never a token. Blank is None."""
    if not isinstance(value, str):
        raise KbaiError(errors.VALIDATION, detail=f"{field} must be a string (or null).")
    trimmed = value.replace("\r\n", "\n").strip()
    if not trimmed:
        return None
    if len(trimmed) > max_length:
        raise KbaiError(
            errors.VALIDATION, detail=f"{field} is {len(trimmed)} characters long; the most is {max_length}."
        )
    if redact(trimmed) != trimmed:
        raise KbaiError(errors.VALIDATION, detail=f"{field} must not contain a token (kbai_pk_...).")
    for ch in trimmed:
        if ch not in "\n\t" and unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
            raise KbaiError(
                errors.VALIDATION,
                detail=f"{field} contains an invisible or control character (U+{ord(ch):04X}); use visible text only.",
            )
    return trimmed
