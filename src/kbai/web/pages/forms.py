"""Reading the pages' form fields: id lists, permission groups, and errors in a person's words."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kbai import errors
from kbai.access.catalog import Catalog, Permission
from kbai.errors import KbaiError


def ids(values: list[str] | None, what: str) -> list[int]:
    out = []
    for v in values or []:
        if not v.isdigit() or len(v) > 18:
            raise KbaiError(errors.VALIDATION, detail=f"Unknown {what} in the form; reload the page and try again.")
        out.append(int(v))
    return out


def grouped(catalog: Catalog, only: frozenset[str] | None = None) -> list[tuple[str, list[Permission]]]:
    """The catalog's groups, cut to ``only`` when given; empty groups dropped."""
    groups = [(g, [p for p in ps if only is None or p.key in only]) for g, ps in catalog.groups()]
    return [(g, ps) for g, ps in groups if ps]


def _person_words(err: KbaiError, field: str, label: str) -> KbaiError:
    """A domain message about ``field`` ("name must not …") as a sentence ("The name must not …")."""
    if err.code == "validation_error" and err.message.startswith(field + " "):
        return KbaiError(errors.VALIDATION, detail=f"The {label} {err.message[len(field) + 1 :]}")
    return err


def _lines(text: str) -> list[str]:
    """The allowlist box: one range per line (commas and spaces separate too)."""
    return [part for part in text.replace(",", " ").split() if part]


def _person_words_of(check: Callable[[object], Any], value: str, field: str) -> Any:
    try:
        return check(value)
    except KbaiError as err:
        raise _person_words(err, field, field) from None
