"""Who is calling: a session cookie or a Bearer token, turned into an :class:`~kbai.store.audit.Actor`.

Failed token authentications count against the client IP's rate limit (a good token is served
even from a blocked address); a successful token request marks the token used (buffered, see
``kbai.tokens.usage``) once the response is < 400.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPBearer
from starlette.concurrency import run_in_threadpool

from kbai import errors
from kbai.access.service import may_manage, require
from kbai.access.sessions import SessionInfo
from kbai.errors import KbaiError
from kbai.services import Services
from kbai.store.audit import Actor
from kbai.tokens.verify import Outcome, Verification
from kbai.web.answers import bearer_token

log = logging.getLogger("kbai.web")
SESSION_COOKIE = "kbai_session"
CSRF_HEADER = "X-CSRF-Token"

# Declared for the OpenAPI document; the parsing below is our own so that errors follow RFC 6750.
bearer_scheme = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer kbai_pk_...`")
cookie_scheme = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="Session from POST /api/v1/session.")


@dataclass(frozen=True)
class Principal:
    actor: Actor
    via: Literal["session", "token"]
    session: SessionInfo | None = None
    verification: Verification | None = None


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]  # app.state is untyped; create_app sets it


def client_ip(request: Request) -> str:
    # Behind a trusted proxy the host comes from X-Forwarded-For, and only when it is an IP address
    # (kbai.web.proxy). At most 64 chars, the width of every stored ip column, whatever the ASGI server says.
    return (request.client.host if request.client else "unknown")[:64]


def scope_ip(scope: Mapping[str, Any]) -> str:
    """:func:`client_ip` of a raw ASGI scope."""
    client = scope.get("client")
    return (client[0] if client else "unknown")[:64]


def check_token(
    svc: Services, ip: str, token: str, required: tuple[str, ...] = (), *, warm_only: bool = False
) -> Verification | None:
    """Verify, count, and raise the public error for a token that is not good.

    A token that verifies is always served, whatever the failure limiter says about its address
    (SPEC: a shared egress address flooded with bad tokens must not lock out the good ones). A
    failure counts against the client address; while the address is blocked, its failing attempts
    get 429 (``rate_limited``) instead of the failure itself.

    With ``warm_only`` it does no I/O at all and returns None when it would need some (a cache
    miss, or a failure to count in Redis), so async routes can answer warm requests on the event
    loop and send only the rest to the thread pool.
    """
    if warm_only:
        found = svc.tokens.verify_warm(token, required, client_ip=ip)
        if found is None:
            return None
        result = found
        if not result.authenticated and not svc.token_failures.local:
            return None  # counting this failure is a Redis round trip
    else:
        result = svc.tokens.verify(token, required, client_ip=ip)
    if result.ok and result.record is not None and result.record.limited:
        # The token's own rate limit and quota (kbai.tokens.limits): memory, unless a share must be taken.
        admitted = svc.limits.admit(result.record, warm_only=warm_only)
        if admitted is None:
            return None
        if admitted.error is not None:
            record = result.record
            svc.metrics.verified(admitted.error.code)
            log.warning("token %s (id %s) refused: %s", record.prefix, record.token_id, admitted.error.code)
            raise admitted.error
        if admitted.quota_remaining is not None:
            result = Verification(
                result.outcome, result.record, result.scopes, result.missing, admitted.quota_remaining
            )
    svc.metrics.verified(result.outcome.value)
    if result.authenticated:
        return result
    if result.outcome is Outcome.REVOKED and result.record is not None and result.record.rotated_out:
        if warm_only and not svc.reuse.handled(result.record.token_id):
            return None  # the first reuse seen here claims the alert in the database
        svc.reuse.reused(result.record, ip)
    if result.outcome is Outcome.IP_NOT_ALLOWED and result.record is not None:
        record = result.record
        log.warning("token %s (id %s) refused from %s: outside its IP allowlist", record.prefix, record.token_id, ip)
        svc.usage.refused(record.token_id, svc.clock.now(), ip)
    wait = svc.token_failures.failed(ip)
    if wait:
        svc.metrics.rate_limited.labels("token").inc()
        raise KbaiError(errors.RATE_LIMITED, retry_after=wait)
    raise errors.for_outcome(result.outcome.value)


async def check_token_async(svc: Services, ip: str, token: str, required: tuple[str, ...] = ()) -> Verification:
    """:func:`check_token` on the event loop when it needs no I/O, else in the thread pool."""
    result = check_token(svc, ip, token, required, warm_only=True)
    if result is None:
        result = await run_in_threadpool(check_token, svc, ip, token, required)
    assert result is not None  # only warm_only checks return None
    return result


def verify_bearer(
    svc: Services, request: Request, token: str, required: tuple[str, ...] = (), *, warm_only: bool = False
) -> Verification | None:
    """:func:`check_token` for the client of ``request``."""
    return check_token(svc, client_ip(request), token, required, warm_only=warm_only)


def token_actor(result: Verification, ip: str) -> Actor:
    record = result.record
    assert record is not None
    return Actor(
        kind="token",
        user_id=record.user_id,
        tenant_id=record.tenant_id,
        email=record.email or None,  # None: a service token (no person)
        token_id=record.token_id,
        token_prefix=record.prefix,
        ip=ip,
        permissions=result.scopes,
        person_id=record.person_id or None,
    )


def session_principal(svc: Services, request: Request) -> Principal | None:
    info = svc.sessions.resolve(request.cookies.get(SESSION_COOKIE))
    if info is None:
        return None
    perms = svc.access.membership_permissions(info.user_id)
    if perms is None:
        return None
    actor = Actor(
        kind="user",
        user_id=info.user_id,
        tenant_id=info.tenant_id,
        email=info.email,
        ip=client_ip(request),
        permissions=perms,
        person_id=info.person_id,
    )
    return Principal(actor, "session", session=info)


async def principal(
    request: Request,
    _bearer: Annotated[object, Depends(bearer_scheme)] = None,
    _cookie: Annotated[object, Depends(cookie_scheme)] = None,
) -> Principal:
    """A session or a token, whichever the request carries (a token wins when both are sent).

    Async, so that a warm token is resolved on the event loop; whatever needs the database (a
    cold token, any session) runs in the thread pool.
    """
    svc = services(request)
    token = bearer_token(request)
    if token is not None:
        ip = client_ip(request)
        result = await check_token_async(svc, ip, token)
        request.state.kbai_token_id = result.record.token_id if result.record else None
        return Principal(token_actor(result, ip), "token", verification=result)
    found = await run_in_threadpool(session_principal, svc, request)
    if found is None:
        raise KbaiError(errors.NOT_AUTHENTICATED)
    if request.method not in ("GET", "HEAD", "OPTIONS") and not found.session.csrf_ok(  # type: ignore[union-attr]  # a session principal has one
        request.headers.get(CSRF_HEADER)
    ):
        raise KbaiError(errors.CSRF_FAILED)
    return Principal(found.actor, "session", session=found.session)


AnyPrincipal = Annotated[Principal, Depends(principal)]


async def session_only(p: AnyPrincipal) -> Principal:
    """Token management needs a person at a keyboard: a token can never mint or list tokens."""
    if p.via != "session":
        raise KbaiError(errors.SESSION_REQUIRED, action="manage tokens")
    return p


SessionPrincipal = Annotated[Principal, Depends(session_only)]


def needs(permission: str, action: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that demands ``permission`` (a token must carry it as an effective scope)."""

    async def dependency(p: AnyPrincipal) -> Principal:
        require(p.actor, permission, action)
        return p

    return dependency


def manages(permission: str, action: str) -> Callable[[Principal], Principal]:
    """A dependency for changes to users and roles: a session holding ``permission``, never a token (a login
    a token created, or a role it raised, would outlive the token)."""

    def dependency(p: AnyPrincipal) -> Principal:
        if p.via != "session":
            raise KbaiError(errors.MANAGE_NEEDS_SESSION, action=action)
        may_manage(p.actor, permission, action)
        return p

    return dependency
