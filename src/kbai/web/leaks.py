"""Leak response over HTTP: GitHub secret-scanning alerts, public revocation, and in-app notifications.

The two leak endpoints read the raw body themselves: GitHub's signature covers the exact bytes, and
the public endpoint counts every request against its rate limit before spending anything on
parsing. Their request schemas are declared for the OpenAPI document by hand for that reason.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from limits import RateLimitItemPerMinute
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from kbai import errors
from kbai.delivery.notifications import NotificationView
from kbai.errors import KbaiError
from kbai.lifecycle.leaks import GITHUB, PUBLIC, LeakReport
from kbai.store.audit import Actor
from kbai.web import prefix
from kbai.web import schemas as sc
from kbai.web.api import ERRORS, MAX_ID
from kbai.web.auth import SessionPrincipal, client_ip, services

MAX_GITHUB_REPORTS = 5000
MAX_CREDENTIALS = 1000
NotificationId = Annotated[int, Path(ge=1, le=MAX_ID, description="A notification id.")]

router = APIRouter(prefix="/api/v1")


# ---- schemas (also the OpenAPI document) ------------------------------------------------------
class GitHubMatchIn(BaseModel):
    """One match from GitHub secret scanning."""

    model_config = ConfigDict(extra="allow")
    token: str = Field(description="The string that matched the kbai token pattern.", examples=["kbai_pk_" + "0" * 64])
    type: str | None = Field(default=None, examples=["kbai_api_token"], description="The pattern's type name.")
    url: str | None = Field(
        default=None, examples=["https://github.com/octo/repo/blob/abc123/.env"], description="Where it was found."
    )
    source: str | None = Field(
        default=None, examples=["content"], description="content, commit, pull_request_comment, issue_body, ..."
    )


class GitHubVerdictOut(BaseModel):
    token_hash: str = Field(description="SHA-256 hex of the reported token string.")
    token_type: str = Field(examples=["kbai_api_token"])
    label: Literal["true_positive", "false_positive"] = Field(
        description="true_positive: a token we issued (it is revoked now if it was active); false_positive: not ours."
    )


class CredentialsRevokeIn(BaseModel):
    credentials: list[str] = Field(
        min_length=1,
        max_length=MAX_CREDENTIALS,
        description=f"1 to {MAX_CREDENTIALS} tokens you found.",
        examples=[["kbai_pk_" + "0" * 64]],
    )


class RevocationReceivedOut(BaseModel):
    received: int = Field(description="How many strings were received. Says nothing about whose they were.")


class NotificationOut(BaseModel):
    id: int
    kind: str = Field(examples=["token.leaked"])
    title: str
    body: str
    details: dict[str, object]
    created_at: datetime = Field(description=sc.TIME)
    read_at: datetime | None = Field(description="When you marked it read. " + sc.TIME)

    @field_validator("details")
    @classmethod
    def _link_under_prefix(cls, value: dict[str, object]) -> dict[str, object]:
        # A stored link is a root-relative page path; a client gets the address to open (KBAI_PUBLIC_URL's path).
        link = value.get("link")
        return {**value, "link": prefix.url(link)} if isinstance(link, str) else value


class NotificationListOut(BaseModel):
    notifications: list[NotificationOut]
    next_cursor: str | None
    unread: int = Field(description="Unread notifications in total.")


def _body_schema(schema: dict[str, Any]) -> dict[str, Any]:
    # Inline (no $ref): the body is parsed by hand, so FastAPI does not add these models to components.
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _error(description: str) -> dict[str, Any]:
    return {"model": sc.ErrorOut, "description": description}


TOO_LARGE: dict[int | str, dict[str, Any]] = {
    413: _error("The body is larger than the server accepts (KBAI_MAX_BODY_BYTES).")
}


# ---- GitHub secret scanning partner endpoint ---------------------------------------------------
@router.post(
    "/secret-scanning/github",
    response_model=list[GitHubVerdictOut],
    tags=["leaks"],
    summary="Leak report from GitHub secret scanning",
    openapi_extra=_body_schema(
        {"type": "array", "maxItems": MAX_GITHUB_REPORTS, "items": GitHubMatchIn.model_json_schema()}
    ),
    responses={
        401: _error("Missing or wrong GitHub signature, or unknown key id; nothing was revoked."),
        422: _error("The body is not a JSON array of matches."),
        **TOO_LARGE,
    },
)
async def github_leak_report(
    request: Request,
    github_public_key_identifier: Annotated[
        str | None, Header(description="Which of GitHub's secret-scanning public keys signed the body.")
    ] = None,
    github_public_key_signature: Annotated[
        str | None, Header(description="Base64 DER ECDSA P-256 / SHA-256 signature of the raw body.")
    ] = None,
) -> list[dict[str, Any]]:
    """GitHub's secret scanning partner program: tokens GitHub found in public. Every active token of ours
    in the batch is revoked at once; owners and tenant admins are notified. The signature is checked
    against ``KBAI_SECRET_SCANNING_KEYS_FILE`` before anything else."""
    svc = services(request)
    body = await request.body()
    svc.partner_keys.verify(github_public_key_identifier, github_public_key_signature, body)
    reports = _github_reports(body)
    actor = Actor(kind="service", email=GITHUB, ip=client_ip(request))
    verdicts = await run_in_threadpool(svc.leaks.report, actor, GITHUB, reports)
    return [asdict(v) for v in verdicts]


def _github_reports(body: bytes) -> list[LeakReport]:
    def bad(detail: str) -> KbaiError:
        return KbaiError(errors.LEAK_REPORT_INVALID, limit=MAX_GITHUB_REPORTS, detail=detail)

    data = _json(body, bad)
    if not isinstance(data, list):
        raise bad("the body is not an array")
    if len(data) > MAX_GITHUB_REPORTS:
        raise bad(f"got {len(data)} entries")
    reports = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("token"), str):
            raise bad(f"entry {i} is not an object with a token string")
        for field in ("type", "url", "source"):
            if item.get(field) is not None and not isinstance(item[field], str):
                raise bad(f"entry {i}: {field} must be a string")
        reports.append(LeakReport(item["token"], item.get("type"), item.get("url"), item.get("source")))
    return reports


# ---- public revocation ---------------------------------------------------------------------------
@router.post(
    "/credentials/revoke",
    status_code=202,
    response_model=RevocationReceivedOut,
    tags=["leaks"],
    summary="Revoke tokens you found (anyone)",
    openapi_extra=_body_schema(CredentialsRevokeIn.model_json_schema()),
    responses={
        422: _error('The body is not {"credentials": [...]} with 1 to 1,000 strings.'),
        429: _error("Too many requests from your address (see Retry-After)."),
        **TOO_LARGE,
    },
)
async def revoke_credentials(request: Request) -> dict[str, int]:
    """Found kbai tokens somewhere they should not be? Send them here: every active one is revoked and its
    owner told. No authentication; the answer is the same whether or not any token was ours. Rate limited
    per client IP (``KBAI_PUBLIC_REVOCATIONS_PER_MINUTE``)."""
    svc = services(request)
    ip = client_ip(request)
    limit = RateLimitItemPerMinute(svc.settings.public_revocations_per_minute)
    wait = svc.limiter.blocked(limit, "credential-revoke", ip)
    if wait:
        svc.metrics.rate_limited.labels("revocation").inc()
        raise KbaiError(errors.REVOCATION_RATE_LIMITED, retry_after=wait)
    svc.limiter.failed(limit, "credential-revoke", ip)  # every request counts, not only failures
    credentials = _credentials(await request.body())
    actor = Actor(kind="service", email=PUBLIC, ip=ip)
    await run_in_threadpool(svc.leaks.report, actor, PUBLIC, [LeakReport(c) for c in credentials])
    return {"received": len(credentials)}


def _credentials(body: bytes) -> list[str]:
    def bad(detail: str) -> KbaiError:
        return KbaiError(errors.REVOCATION_INVALID, limit=MAX_CREDENTIALS, detail=detail)

    data = _json(body, bad)
    if not isinstance(data, dict) or set(data) != {"credentials"}:
        raise bad('expected an object with the single field "credentials"')
    creds = data["credentials"]
    if not isinstance(creds, list) or not all(isinstance(c, str) for c in creds):
        raise bad("credentials must be a list of strings")
    if not 1 <= len(creds) <= MAX_CREDENTIALS:
        raise bad(f"got {len(creds)}")
    return creds


def _json(body: bytes, bad: Any) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise bad("the body is not valid JSON") from None


# ---- in-app notifications --------------------------------------------------------------------------
def _notification_json(n: NotificationView) -> dict[str, Any]:
    return {
        "id": n.id,
        "kind": n.kind,
        "title": n.title,
        "body": n.body,
        "details": n.details,
        "created_at": n.created_at,
        "read_at": n.read_at,
    }


@router.get(
    "/notifications",
    response_model=NotificationListOut,
    tags=["notifications"],
    summary="Your notifications, newest first",
    responses=ERRORS,
)
def list_notifications(
    p: SessionPrincipal,
    request: Request,
    cursor: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    unread_only: Annotated[bool, Query(description="Only those not yet marked read.")] = False,
) -> dict[str, Any]:
    """Messages for you, e.g. "your token was found in public and revoked". Needs a session."""
    assert p.actor.user_id is not None
    if cursor is not None and not (
        cursor.isascii() and cursor.isdigit() and len(cursor) <= 10 and int(cursor) <= MAX_ID
    ):
        raise KbaiError(errors.VALIDATION, detail="cursor must be the next_cursor of a previous page.")
    svc = services(request)
    rows = svc.notifications.list(
        p.actor.user_id, before_id=int(cursor) if cursor else None, limit=limit + 1, unread_only=unread_only
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "notifications": [_notification_json(n) for n in rows],
        "next_cursor": str(rows[-1].id) if more else None,
        "unread": svc.notifications.unread(p.actor.user_id),
    }


@router.post(
    "/notifications/{notification_id}/read",
    response_model=NotificationOut,
    tags=["notifications"],
    summary="Mark a notification read",
    responses=ERRORS,
)
def read_notification(notification_id: NotificationId, p: SessionPrincipal, request: Request) -> dict[str, Any]:
    assert p.actor.user_id is not None
    svc = services(request)
    svc.notifications.mark_read(p.actor.user_id, notification_id)
    view = svc.notifications.get(p.actor.user_id, notification_id)
    if view is None:
        raise KbaiError(errors.NOT_FOUND, what="Notification")
    return _notification_json(view)
