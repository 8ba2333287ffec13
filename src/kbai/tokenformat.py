"""What a token looks like: ``kbai_pk_`` + 64 lowercase hex chars (and a SCIM provisioning credential,
``kbai_scim_`` + 64). The only module that knows it."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterator

PREFIX = "kbai_pk_"
SECRET_BYTES = 32
TOKEN_LENGTH = len(PREFIX) + SECRET_BYTES * 2  # 72
DISPLAY_PREFIX_LENGTH = 12

_TOKEN_RE = re.compile(r"kbai_pk_[0-9a-f]{64}")
# A token inside other text (files, logs): not followed by more word characters, so a longer
# look-alike is not taken for a token. Scanner rules in integrations/secret-scanning/ mirror it.
_EMBEDDED_RE = re.compile(r"kbai_pk_[0-9a-f]{64}(?![0-9A-Za-z_])")
# Anything that could be a token or most of one, in any case: used only to redact. A display
# prefix (4 hex chars after kbai_pk_) is left alone, so redacting twice changes nothing.
_REDACT_RE = re.compile(r"kbai_pk_[0-9a-f]{5,}", re.IGNORECASE)

# A tenant's SCIM provisioning credential: another prefix, so scanners and the leak-report endpoint tell
# it apart from a developer token (and it can never be taken for one at /auth/check).
SCIM_PREFIX = "kbai_scim_"
SCIM_DISPLAY_PREFIX_LENGTH = 14
_SCIM_RE = re.compile(r"kbai_scim_[0-9a-f]{64}")
_SCIM_EMBEDDED_RE = re.compile(r"kbai_scim_[0-9a-f]{64}(?![0-9A-Za-z_])")
_SCIM_REDACT_RE = re.compile(r"kbai_scim_[0-9a-f]{5,}", re.IGNORECASE)


def mint() -> str:
    """A new token: 32 bytes from the OS CSPRNG, lowercase hex, behind the fixed prefix."""
    return PREFIX + secrets.token_hex(SECRET_BYTES)


def is_well_formed(candidate: object) -> bool:
    """True when ``candidate`` is exactly a token: no padding, no upper case, no look-alikes."""
    return isinstance(candidate, str) and len(candidate) == TOKEN_LENGTH and _TOKEN_RE.fullmatch(candidate) is not None


def digest(token: str) -> str:
    """SHA-256 hex digest: the only form in which a token is stored."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def display_prefix(token: str) -> str:
    """The first 12 chars, e.g. ``kbai_pk_a1b2``: identifies a token without exposing it."""
    return token[:DISPLAY_PREFIX_LENGTH]


def find_all(text: str) -> Iterator[tuple[int, str]]:
    """Every token in ``text`` as (offset, token): what secret scanners look for."""
    for match in _EMBEDDED_RE.finditer(text):
        yield match.start(), match.group(0)


def report_hash(candidate: str) -> str:
    """SHA-256 hex of any reported string (GitHub's ``token_hash``); equals :func:`digest` for a token."""
    return hashlib.sha256(candidate.encode("utf-8", "surrogatepass")).hexdigest()


def mint_scim() -> str:
    """A new SCIM provisioning credential: 32 bytes from the OS CSPRNG behind ``kbai_scim_``."""
    return SCIM_PREFIX + secrets.token_hex(SECRET_BYTES)


def is_scim_credential(candidate: object) -> bool:
    """True when ``candidate`` is exactly a provisioning credential."""
    return (
        isinstance(candidate, str)
        and len(candidate) == len(SCIM_PREFIX) + SECRET_BYTES * 2
        and _SCIM_RE.fullmatch(candidate) is not None
    )


def find_all_scim(text: str) -> Iterator[tuple[int, str]]:
    """Every provisioning credential in ``text`` as (offset, credential)."""
    for match in _SCIM_EMBEDDED_RE.finditer(text):
        yield match.start(), match.group(0)


def redact(text: str) -> str:
    """``text`` with every token (and provisioning credential) in it cut to its display prefix and an
    ellipsis (for logs)."""
    text = _REDACT_RE.sub(lambda m: m.group(0)[:DISPLAY_PREFIX_LENGTH] + "…", text)
    return _SCIM_REDACT_RE.sub(lambda m: m.group(0)[:SCIM_DISPLAY_PREFIX_LENGTH] + "…", text)
