"""``GET /api/v1/me`` with a warm token, answered in raw ASGI ahead of FastAPI's routing.

``/api/v1/me`` is the call an integration makes to learn who its token is (Zapier's and n8n's
"test connection" run it, and scripts run it before their work), so it is on the hot path like
``/auth/check``. :class:`MeFront`, called by :class:`~kbai.gateway.check.ForwardAuth`, answers it
only when the answer needs nothing but the cache: a Bearer token that verifies warm, no request
body. Every other request (a session, a cold or failing token, a body) goes on to the FastAPI
route in ``web.api``, which stays the one that documents the answer in ``/openapi.json``, counts
failures and renders errors. What is sent here is byte for byte what that route sends: the same
JSON in ``MeOut``'s field order, the security headers and request id of every kbai answer, the
request metrics under the route's own label, the usage count, and an access-log line only when
``KBAI_ACCESS_LOG_TOKEN_READS`` is set (a successful token read is counted, not logged).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from kbai.errors import KbaiError
from kbai.services import Services
from kbai.tokens.verify import Verification
from kbai.web.answers import parse_bearer, security_headers
from kbai.web.auth import scope_ip
from kbai.web.brand import logo_origin
from kbai.web.middleware import access_log, request_id_of

PATH = "/api/v1/me"

Headers = list[tuple[bytes, bytes]]


class MeFront:
    """The warm-token answer of ``GET /api/v1/me``; bodies built once per (token record, scopes)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.log_reads = services.settings.access_log_token_reads
        self.security = security_headers(logo_origin(services.settings))
        self._catalog_order = [p.key for p in services.catalog.permissions]
        self._built: dict[tuple[int, frozenset[str]], tuple[object, bytes, bytes]] = {}

    def body(self, result: Verification) -> tuple[bytes, bytes]:
        """(JSON body, its length) of ``result``, as ``web.api.me`` renders it for a token."""
        record = result.record
        assert record is not None
        key = (record.token_id, result.scopes)
        found = self._built.get(key)
        if found is not None and found[0] is record:
            return found[1], found[2]
        out = {
            "user": None if record.service else {"id": record.person_id, "email": record.email},
            "tenant": {"id": record.tenant_id, "name": record.tenant_name, "external_id": record.tenant_external_id},
            "scopes": [k for k in self._catalog_order if k in result.scopes],
            "token_id": record.token_id,
            "auth": "token",
        }
        # Starlette's JSONResponse encoding, so that both paths send the same bytes.
        body = json.dumps(out, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()
        if len(self._built) >= 10_000:
            self._built.clear()
        length = str(len(body)).encode()
        self._built[key] = (record, body, length)
        return body, length

    async def answer(self, scope: Mapping[str, Any], send: Any) -> bool:
        """Send the answer and return True when the request is a warm token's; else send nothing."""
        started = time.perf_counter()
        authorization = user_agent = given_id = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif name in (b"content-length", b"transfer-encoding"):
                return False  # a body: the route's middleware checks its size
            elif name == b"x-request-id":
                given_id = value
            elif name == b"user-agent" and user_agent is None:
                user_agent = value.decode("latin-1")
        try:
            token = parse_bearer(authorization)
        except KbaiError:
            return False  # another scheme: the route answers with its RFC 6750 error
        if token is None:
            return False
        services = self.services
        ip = scope_ip(scope)
        result = services.tokens.verify_warm(token, (), client_ip=ip)
        if result is None or not result.authenticated or (result.record is not None and result.record.limited):
            # Cold, failing (the route counts the failure against the address), or with its own rate limit or
            # quota to count (the route's check does).
            return False
        services.metrics.verified(result.outcome.value)
        record = result.record
        assert record is not None
        request_id = request_id_of(given_id)
        body, length = self.body(result)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", length),
                    (b"content-type", b"application/json"),
                    *self.security,
                    (b"x-request-id", request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        services.usage.record(record.token_id, services.clock.now(), ip, user_agent or None)
        elapsed = time.perf_counter() - started
        services.metrics.served("GET", PATH, 200, elapsed)
        if self.log_reads:
            access_log(dict(scope), 200, elapsed, request_id)
        return True
