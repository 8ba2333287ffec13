"""Service credentials at the HTTP edge: the Basic header of introspection and operator API callers.

Failures are rate limited per client address (``KBAI_INTROSPECTION_FAILURES_PER_MINUTE``), so client
ids and secrets cannot be guessed at speed. Shared by ``kbai.gateway.routes`` (introspection) and
``kbai.web.operator``; the credential itself is checked by ``kbai.access.credentials``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from limits import RateLimitItemPerMinute
from starlette.concurrency import run_in_threadpool

from kbai import errors
from kbai.access.credentials import Credential
from kbai.errors import KbaiError
from kbai.services import Services
from kbai.web.auth import client_ip

T = TypeVar("T")


async def authenticate_client(svc: Services, request: Request) -> Credential:
    """The service credential in the Basic header; failures are rate limited per client address
    (``KBAI_INTROSPECTION_FAILURES_PER_MINUTE``), so client ids and secrets cannot be guessed at speed."""
    ip = client_ip(request)
    limit = RateLimitItemPerMinute(svc.settings.introspection_failures_per_minute)

    async def counters(action: Callable[..., T]) -> T:  # Redis is I/O: keep it off the event loop
        if svc.limiter.local:
            return action(limit, "introspect-client", ip)
        return await run_in_threadpool(action, limit, "introspect-client", ip)

    wait = await counters(svc.limiter.blocked)
    if wait:
        svc.metrics.rate_limited.labels("introspection").inc()
        raise KbaiError(errors.CLIENT_RATE_LIMITED, retry_after=wait)
    try:
        client_id, secret = _client(request)
        credential = await run_in_threadpool(svc.credentials.authenticate, client_id, secret)
        if credential is None:
            raise KbaiError(errors.INVALID_CLIENT)
    except KbaiError:
        await counters(svc.limiter.failed)
        raise
    return credential


def _client(request: Request) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise KbaiError(errors.INVALID_CLIENT)
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise KbaiError(errors.INVALID_CLIENT) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise KbaiError(errors.INVALID_CLIENT)
    return client_id, secret
