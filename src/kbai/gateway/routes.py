"""/auth/check (forward-auth) and /api/v1/introspect (RFC 7662)."""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from kbai import errors
from kbai.errors import KbaiError
from kbai.gateway import check
from kbai.web import schemas as sc
from kbai.web.api import ERRORS
from kbai.web.auth import services
from kbai.web.clients import authenticate_client

router = APIRouter(responses=ERRORS)
T = TypeVar("T")


@router.get(
    "/auth/check",
    tags=["gateway"],
    summary="Forward-auth check",
    status_code=200,
    responses={
        200: {
            "description": "Token valid. Identity in X-Kbai-User (the person's id), X-Kbai-User-Email, "
            "X-Kbai-Tenant, X-Kbai-Scopes (space-separated), X-Kbai-Token-Id, and when set "
            "X-Kbai-Tenant-External-Id and X-Kbai-User-External-Id. A service token (owned by the tenant) "
            "sends X-Kbai-Service-Token: true instead of the X-Kbai-User headers.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def auth_check(
    request: Request,
    scope: Annotated[
        list[str] | None, Query(max_length=100, description="Scopes the request needs; repeatable (at most 50).")
    ] = None,
) -> Response:
    """For nginx ``auth_request``, Traefik ForwardAuth and Envoy ext_authz.

    Rate-limited callers get 401 (with Retry-After) rather than 429, because nginx treats any status
    other than 2xx/401/403 from an auth subrequest as a server error. Any method, and any path below
    /auth/check (Envoy's path_prefix), gets the same answer.
    """
    # kbai serves every /auth/check request in raw ASGI (gateway.check.ForwardAuth) before routing; this
    # route documents it in /openapi.json and gives the same answer when an app is built without that front.
    svc = services(request)
    status, headers, body, _ = await check.answer(
        svc,
        request.scope,
        check.IdentityHeaders(svc),
        request.headers.get("authorization"),
        request.headers.get("user-agent"),
    )
    return Response(
        body,
        status_code=status,
        headers={k.decode(): v.decode("latin-1") for k, v in headers if k != b"content-length"},
    )


# Envoy's HTTP ext_authz sends the check with the client's own method, and with `path_prefix` it
# appends the client's path, so the same check answers any method at /auth/check and below it.
@router.api_route("/auth/check", methods=["HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], include_in_schema=False)
@router.api_route(
    "/auth/check/{original_path:path}",
    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    include_in_schema=False,
)
async def auth_check_any_method(request: Request) -> Response:
    return await auth_check(request)


@router.post(
    "/api/v1/introspect",
    response_model=sc.IntrospectionOut,
    response_model_exclude_none=True,
    tags=["gateway"],
    summary="Token introspection (RFC 7662)",
    responses={
        400: {"model": sc.ErrorOut, "description": "invalid_request: no token parameter, or a body that is not JSON."},
        413: {"model": sc.ErrorOut, "description": "The body is larger than the server accepts."},
        415: {"model": sc.ErrorOut, "description": "The body is neither form-encoded nor JSON."},
    },
    openapi_extra={
        "security": [{"serviceCredential": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["token"],
                        "properties": {
                            "token": {"type": "string", "maxLength": 4096},
                            "token_type_hint": {"type": "string", "maxLength": 100},
                        },
                    }
                },
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["token"],
                        "properties": {
                            "token": {"type": "string", "maxLength": 4096},
                            "token_type_hint": {"type": "string", "maxLength": 100},
                        },
                    }
                },
            },
        },
    },
)
async def introspect(request: Request) -> Any:
    """Authenticate with a service credential (HTTP Basic, from `kbai service-credential create`).

    Active tokens get their scope, owner and times, and ``allowed_ips`` when the token has an IP allowlist
    (enforce it against your own client's address); anything else, a paused token included, gets
    ``{"active": false}`` alone. An introspection is a use of the token: it counts against the token's own
    rate limit and quota (``rate_limit``, and ``quota_remaining`` after this use, are in the answer); over
    either, the answer is ``{"active": false, "kbai_refused": "rate_limited" | "quota_exhausted"}`` with
    ``retry_after`` (seconds) when it is known: answer your client 429 then.
    """
    svc = services(request)
    credential = await authenticate_client(svc, request)
    if "introspect" not in credential.abilities:
        raise KbaiError(errors.CREDENTIAL_LACKS_ABILITY, action="introspect tokens", ability="introspect")
    token = await _token_param(request)
    result = await run_in_threadpool(svc.tokens.verify, token)
    svc.metrics.verified(result.outcome.value)
    if not result.ok or result.record is None:
        return JSONResponse({"active": False}, headers={"Cache-Control": "no-store"})
    record = result.record
    quota_remaining = None
    if record.limited:  # an introspection is a use: it counts against the token's rate limit and quota
        admitted = await run_in_threadpool(svc.limits.admit, record)
        assert admitted is not None
        if admitted.error is not None:
            svc.metrics.verified(admitted.error.code)
            refused: dict[str, Any] = {"active": False, "kbai_refused": admitted.error.code}
            if "retry_after" in admitted.error.params:
                refused["retry_after"] = admitted.error.params["retry_after"]
            if record.rate_limit is not None:
                refused["rate_limit"] = record.rate_limit.json()
            return JSONResponse(refused, headers={"Cache-Control": "no-store"})
        quota_remaining = admitted.quota_remaining
    svc.usage.record(record.token_id, svc.clock.now())
    ordered = [p.key for p in svc.catalog.permissions if p.key in result.scopes]
    body: dict[str, Any] = {
        "active": True,
        "scope": " ".join(ordered),
        "client_id": credential.client_id,
        # A service token belongs to the tenant: no person, so no username either.
        "sub": f"service:{record.token_id}" if record.service else str(record.person_id),
        **({"service_token": True} if record.service else {"username": record.email}),
        "tenant": str(record.tenant_id),
        "token_id": record.token_id,
        "iat": int(record.created_at.timestamp()),
        "token_type": "Bearer",
    }
    if record.expires_at is not None:
        body["exp"] = int(record.expires_at.timestamp())
    if record.allowed_ips is not None:
        # The resource server sees the integration's address; kbai sees the resource server's: the caller
        # enforces the list (kbai.sdk does).
        body["allowed_ips"] = list(record.allowed_ips)
    if record.rate_limit is not None:
        body["rate_limit"] = record.rate_limit.json()
    if quota_remaining is not None:
        body["quota_remaining"] = quota_remaining
    if record.tenant_external_id is not None:
        body["tenant_external_id"] = record.tenant_external_id
    if record.user_external_id is not None and not record.service:
        body["user_external_id"] = record.user_external_id
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def _token_param(request: Request) -> str:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    token: object = None
    if content_type == "application/json":
        try:
            data = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly deep nesting
            raise KbaiError(errors.BAD_REQUEST, detail="The body is not valid JSON.") from None
        token = data.get("token") if isinstance(data, dict) else None
    elif content_type in ("application/x-www-form-urlencoded", ""):
        form = await request.form()
        token = form.get("token")
    else:
        raise KbaiError(errors.UNSUPPORTED_MEDIA, expected="application/x-www-form-urlencoded or application/json")
    if not isinstance(token, str) or not token:
        raise KbaiError(errors.BAD_REQUEST, detail="invalid_request: the token parameter is required.")
    return token
