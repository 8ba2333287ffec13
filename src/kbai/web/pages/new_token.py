"""The create form of the API Keys page: fields, expiry and restrictions, the one-time display of the token."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response

from kbai import errors
from kbai.access.catalog import MANAGE_TOKENS
from kbai.errors import KbaiError
from kbai.tokenformat import redact
from kbai.tokens.restrictions import (
    PER_SECONDS,
    REFILL_INTERVALS,
    clean_allowlist,
    clean_description,
    clean_quota,
    clean_rate_limit,
)
from kbai.tokens.service import EXPIRY_PRESETS_DAYS, MAX_LIFETIME_DAYS
from kbai.validate import clean_name
from kbai.web.auth import services
from kbai.web.pages.api_keys import API_KEYS, _api_keys_page
from kbai.web.pages.base import PageRoute, _put_flash, check_form, see_other
from kbai.web.pages.forms import _lines, _person_words, _person_words_of
from kbai.web.pages.inventory import TRUTHY

router = APIRouter(route_class=PageRoute, include_in_schema=False)


CREATE_FIELDS = {
    "name_taken": "name",
    "unknown_scope": "scopes",
    "unheld_scope": "scopes",
    "duplicate_scope": "scopes",
    "session_only_scope": "scopes",
    "policy_expiration_required": "expiry",
    "policy_max_lifetime": "expiry",
    "validation_error": "expiry",
    "invalid_cidr": "allowed_ips",
    "policy_allowlist_required": "allowed_ips",
}


def _token_name(value: str) -> str:
    """The create form's name, checked with the person's words for the usual mistakes (empty, too long)."""
    text = value.strip()
    if not text:
        raise KbaiError(errors.FIELD_TOKEN_NAME_EMPTY)
    if len(text) > NAME_LIMIT:
        raise KbaiError(errors.FIELD_NAME_TOO_LONG, length=len(text), limit=NAME_LIMIT)
    try:
        return clean_name(value, "name")
    except KbaiError as err:
        raise _person_words(err, "name", "name") from None


NAME_LIMIT = 100


@router.post("/system-settings/api-keys")
def create_token(
    request: Request,
    name: Annotated[str, Form(max_length=1000)] = "",
    scopes: Annotated[list[str] | None, Form()] = None,
    identity_only: Annotated[str, Form(max_length=10)] = "",
    expiry: Annotated[str, Form(max_length=20)] = "",
    expires_on: Annotated[str, Form(max_length=40)] = "",
    description: Annotated[str, Form(max_length=2000)] = "",
    allowed_ips: Annotated[str, Form(max_length=3000)] = "",
    self_rotate: Annotated[str, Form(max_length=10)] = "",
    rate_requests: Annotated[str, Form(max_length=40)] = "",
    rate_per: Annotated[str, Form(max_length=10)] = "minute",
    quota_requests: Annotated[str, Form(max_length=40)] = "",
    quota_refill: Annotated[str, Form(max_length=10)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    svc = services(request)
    identity = identity_only.lower() in TRUTHY
    # Echoed back on an error: a pasted token must not come back in the page (cut to its display prefix).
    form = {
        "name": redact(name),
        "scopes": scopes or [],
        "expiry": expiry,
        "expires_on": redact(expires_on),
        "identity_only": identity,
        "description": redact(description),
        "allowed_ips": redact(allowed_ips),
        "self_rotate": self_rotate.lower() in TRUTHY,
        "rate_requests": redact(rate_requests),
        "rate_per": rate_per if rate_per in PER_SECONDS else "minute",
        "quota_requests": redact(quota_requests),
        "quota_refill": quota_refill if quota_refill in REFILL_INTERVALS else "",
    }
    field = None
    try:
        field = "name"
        clean = _token_name(name)
        field = "scopes"
        if not scopes and not identity and MANAGE_TOKENS in p.actor.permissions:
            raise KbaiError(errors.FIELD_SCOPES_NONE)
        field = "expiry"
        days, until = _expiry(expiry, expires_on, svc.clock.now().date())
        field = None
        restrictions = form_restrictions(
            description, allowed_ips, rate_requests, rate_per, quota_requests, quota_refill
        )
        view, plaintext = svc.tokens.create(
            p.actor,
            clean,
            scopes or [],
            expires_in_days=days,
            expires_at=until,
            self_rotate=self_rotate.lower() in TRUTHY,
            **restrictions,
        )
    except (KbaiError, FieldError) as exc:
        err, field = (exc.error, exc.field) if isinstance(exc, FieldError) else (exc, field)
        if field is None:
            field = CREATE_FIELDS.get(err.code)
            if err.code == "name_taken":
                err = KbaiError(errors.FIELD_TOKEN_NAME_TAKEN, name=err.params.get("name", ""))
        return _api_keys_page(request, p, err, form=form, field=field)
    # Post/redirect/get: the token travels to the next page in the session's sealed flash, never in a URL,
    # so reloading that page never submits the form again.
    _put_flash(request, p, {"kind": "created", "id": view.id, "token": plaintext})
    return see_other(API_KEYS)


class FieldError(Exception):
    """A bad field of the "Description and restrictions" block: the error, and the field to show it under."""

    def __init__(self, field: str, error: KbaiError) -> None:
        super().__init__(error.message)
        self.field = field
        self.error = error


def form_restrictions(
    description: str, allowed_ips: str, rate_requests: str, rate_per: str, quota_requests: str, quota_refill: str
) -> dict[str, Any]:
    """The create forms' "Description and restrictions" block (personal and service tokens) as keyword
    arguments of ``TokenService.create`` / ``create_service``; raises :class:`FieldError` naming the bad field."""
    field = "description"
    try:
        out: dict[str, Any] = {"description": _person_words_of(clean_description, description, "description")}
        field = "allowed_ips"
        out["allowed_ips"] = clean_allowlist(_lines(allowed_ips))
        field = "rate_limit"
        out["rate_limit"] = _rate_limit(rate_requests, rate_per)
        field = "quota"
        out["quota"] = _quota(quota_requests, quota_refill)
    except KbaiError as err:
        raise FieldError(field, err) from None
    return out


def _whole(text: str) -> int | None:
    """A whole number as people write it ("10,000", "10 000"); None when empty; raises ValueError otherwise."""
    digits = text.strip().replace(",", "").replace(" ", "").replace("_", "")
    if not digits:
        return None
    if not digits.isascii() or not digits.isdigit():
        raise ValueError(text)
    return int(digits)


def _rate_limit(requests: str, per: str) -> dict[str, object] | None:
    """The form's rate limit as the API's ``rate_limit`` (checked by the same rule)."""
    try:
        count = _whole(requests)
        if count is None:
            return None
        clean_rate_limit({"requests": count, "per": per})
    except (ValueError, KbaiError):
        raise KbaiError(errors.FIELD_RATE_LIMIT) from None
    return {"requests": count, "per": per}


def _quota(requests: str, refill: str) -> dict[str, object] | None:
    """The form's quota as the API's ``quota``: with a refill, the same amount comes back each day or month."""
    try:
        count = _whole(requests)
        if count is None:
            return None
        body: dict[str, object] = {
            "remaining": count,
            "refill": {"amount": count, "interval": refill} if refill else None,
        }
        clean_quota(body)
    except (ValueError, KbaiError):
        raise KbaiError(errors.FIELD_QUOTA) from None
    return body


def _expiry(choice: str, on: str, today: date) -> tuple[int | None, str | None]:
    """The form's expiration choice as (expires_in_days, expires_at) for TokenService.create."""
    if choice == "never":
        return None, None
    if choice == "custom":
        try:
            when = date.fromisoformat(on.strip())
        except ValueError:
            raise KbaiError(errors.FIELD_EXPIRY_DATE_MISSING) from None
        if when <= today:
            raise KbaiError(errors.FIELD_EXPIRY_DATE_PAST)
        if when > today + timedelta(days=MAX_LIFETIME_DAYS):
            raise KbaiError(errors.FIELD_EXPIRY_DATE_TOO_FAR, days=MAX_LIFETIME_DAYS)
        return None, when.isoformat()
    if choice.isdigit() and int(choice) in EXPIRY_PRESETS_DAYS:
        return int(choice), None
    raise KbaiError(errors.FIELD_EXPIRY_CHOICE)
