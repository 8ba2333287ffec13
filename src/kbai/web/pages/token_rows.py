"""What the API Keys table shows of each token: rows, badges, expiry choices, rotation lifetimes, policy hints."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter

from kbai import errors
from kbai.errors import KbaiError
from kbai.lifecycle.hygiene import LABELS as HYGIENE_LABELS
from kbai.lifecycle.hygiene import hygiene
from kbai.services import Services
from kbai.tokens.policy import Policy, check_lifetime
from kbai.tokens.service import EXPIRY_PRESETS_DAYS, RECOMMENDED_EXPIRY_DAYS, TokenView
from kbai.web.pages.base import PageRoute

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _expiry_choices(now: datetime) -> list[dict[str, str]]:
    out = [
        {"value": str(d), "label": f"{d} days", "until": (now + timedelta(days=d)).strftime("%b %-d, %Y")}
        for d in EXPIRY_PRESETS_DAYS
    ]
    return out


# How long the old token keeps working after a rotation: (form value in seconds, label, what the dialog says).
GRACE_CHOICES = (
    ("0", "None", "stops working immediately"),
    ("3600", "1 hour", "keeps working for 1 hour"),
    ("86400", "24 hours", "keeps working for 24 hours"),
    ("604800", "7 days", "keeps working for 7 days"),
)
DEFAULT_GRACE = "86400"
# Table order: what works first, then what stopped (newest first within each).
STATUS_ORDER = {"active": 0, "paused": 1, "expired": 2, "revoked": 3}


@dataclass(frozen=True)
class TokenRow:
    """A row of the API Keys table: the token, its hygiene badges and its rotation links."""

    view: TokenView
    badges: list[tuple[str, str]]  # (flag, label)
    from_id: int | None
    from_view: TokenView | None
    to_id: int | None
    to_view: TokenView | None
    stops_at: datetime | None  # rotated, still in its grace period: when it stops working
    lifetimes: list[dict[str, Any]]  # the rotate form's choices for the new token's lifetime
    quota_left: int | None = None  # with a quota: what is left (stored, plus this instance's unspent share)


def _allowed(policy: Policy, now: datetime, expiry: datetime | None) -> bool:
    """Whether the tenant's policy allows a token expiring at ``expiry`` (the domain's rule, asked, not copied)."""
    try:
        check_lifetime(policy, now, expiry)
    except KbaiError:
        return False
    return True


def _span(delta: timedelta) -> str:
    days = round(delta.total_seconds() / 86400)
    if days >= 1:
        return f"{days} day{'s' if days != 1 else ''}"
    hours = max(1, round(delta.total_seconds() / 3600))
    return f"{hours} hour{'s' if hours != 1 else ''}"


def _rotate_lifetimes(view: TokenView, policy: Policy, now: datetime) -> list[dict[str, Any]]:
    """The new token's lifetime choices: the old lifetime (the API's default) and the presets the policy allows."""
    out: list[dict[str, Any]] = []
    lifetime = None if view.expires_at is None else view.expires_at - view.created_at
    if _allowed(policy, now, None if lifetime is None else now + lifetime):
        same = "no expiration" if lifetime is None else _span(lifetime)
        out.append({"value": "same", "label": f"Same as now ({same})", "default": True})
    presets = [d for d in EXPIRY_PRESETS_DAYS if _allowed(policy, now, now + timedelta(days=d))]
    pick = (
        None
        if out
        else (RECOMMENDED_EXPIRY_DAYS if RECOMMENDED_EXPIRY_DAYS in presets else (presets[-1] if presets else None))
    )
    for d in presets:
        out.append(
            {
                "value": str(d),
                "label": f"{d} days (until {(now + timedelta(days=d)).strftime('%b %-d, %Y')})",
                "default": d == pick,
            }
        )
    return out


def table_badges(view: TokenView, now: datetime) -> list[tuple[str, str]]:
    """Hygiene badges for a table row; "Never used" is left out, the Last used column already says Never."""
    return [(f, HYGIENE_LABELS[f]) for f in hygiene(view, now) if f != "never_used"]


def _token_rows(svc: Services, tokens: list[TokenView], policy: Policy, now: datetime) -> list[TokenRow]:
    by_id = {t.id: t for t in tokens}
    successors = svc.tokens.rotated_to(by_id)
    rows = []
    for t in sorted(tokens, key=lambda v: (STATUS_ORDER.get(v.status, 9), -v.id)):
        to_id = successors.get(t.id)
        grace = t.status == "active" and t.revoked_at is not None
        rows.append(
            TokenRow(
                view=t,
                badges=table_badges(t, now),
                from_id=t.rotated_from_id,
                from_view=by_id.get(t.rotated_from_id or 0),
                to_id=to_id,
                to_view=by_id.get(to_id or 0),
                stops_at=t.revoked_at if grace else None,
                lifetimes=_rotate_lifetimes(t, policy, now) if t.status == "active" and to_id is None else [],
                quota_left=t.quota.remaining + svc.limits.unspent(t.id) if t.quota is not None else None,
            )
        )
    return rows


def _policy_form(policy: Policy, now: datetime) -> dict[str, Any]:
    """What the create form shows of the tenant's policy: the presets it allows, the latest custom date, and the
    recommendation (90 days, or the longest the policy allows when that is less)."""
    presets = [c for c in _expiry_choices(now) if _allowed(policy, now, now + timedelta(days=int(c["value"])))]
    values = [c["value"] for c in presets]
    default = (
        str(RECOMMENDED_EXPIRY_DAYS) if str(RECOMMENDED_EXPIRY_DAYS) in values else (values[-1] if values else "custom")
    )
    latest = max_message = None
    if policy.max_lifetime_days is not None:
        latest = (now + timedelta(days=policy.max_lifetime_days)).date().isoformat()
        max_message = KbaiError(errors.POLICY_MAX_LIFETIME, days=policy.max_lifetime_days, advice="").message
    return {
        "policy": policy,
        "presets": presets,
        "default_expiry": default,
        "allow_never": _allowed(policy, now, None),
        "latest_date": latest,
        "max_message": max_message,
        "recommended": default,
        "recommended_is_90": default == str(RECOMMENDED_EXPIRY_DAYS),
    }


def _lag(seconds: float) -> str:
    """The Last used flush interval in words: "1 minute", "30 seconds"."""
    whole = max(1, round(seconds))
    if whole >= 60 and whole % 60 == 0:
        minutes = whole // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{whole} second{'s' if whole != 1 else ''}"
