"""Constant-time comparison of secrets that arrive as text (CSRF tokens, signatures)."""

from __future__ import annotations

import hmac


def same_secret(presented: str | None, expected: str | None) -> bool:
    """True when both are given and equal, in time that does not depend on where they differ.

    ``hmac.compare_digest`` refuses ``str`` holding anything but ASCII (a TypeError, i.e. a 500 for a
    form field with an "é" in it), so both sides are compared as UTF-8 bytes. ``surrogatepass`` keeps
    a lone surrogate (possible from a JSON ``"\\ud800"`` escape) from raising while encoding.
    """
    if presented is None or expected is None or not isinstance(presented, str) or not isinstance(expected, str):
        return False
    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))
