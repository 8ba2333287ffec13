"""``/auth/check`` in raw ASGI, ahead of FastAPI's routing: the hot path at the server's ceiling.

Every method at ``/auth/check`` and below it (Envoy's ``path_prefix`` mode) is answered here, by
:class:`ForwardAuth`, without routing, dependency resolution, body parsing or (on a warm hit) a
thread-pool hop: one pass over the headers, the ``?scope=`` parameters when there are any, the
verification pipeline on the cache, the buffered usage count, and one response. The answer is the
one the FastAPI route in ``gateway.routes`` documents in ``/openapi.json`` (that route, reached only
when an app is built without this front, renders the same :func:`answer`): identity headers and
``Cache-Control: no-store`` on 200, RFC 6750 ``WWW-Authenticate`` on 401/403, 401 with ``Retry-After``
for a blocked client, the request id and security headers of every kbai response, the request
metrics, and an access-log line for every refusal (for successes only when
``KBAI_ACCESS_LOG_TOKEN_READS`` is set).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote

from sqlalchemy.exc import OperationalError

from kbai import errors, logs
from kbai.errors import KbaiError
from kbai.gateway.me import PATH as ME_PATH
from kbai.gateway.me import MeFront
from kbai.services import Services
from kbai.tokenformat import redact
from kbai.tokens.verify import Verification
from kbai.web.answers import auth_headers, parse_bearer
from kbai.web.auth import check_token_async, scope_ip
from kbai.web.middleware import SECURITY_HEADERS, access_log, reject_too_large, request_id_of

log = logging.getLogger("kbai.web")
PATH = "/auth/check"
ROUTE_ANY = "/auth/check/{original_path:path}"  # the metrics label of the sub-paths, as FastAPI named it
_OK_BODY = b'{"active":true}'
MAX_SCOPES, MAX_SCOPE_LENGTH = 50, 100

Headers = list[tuple[bytes, bytes]]


def _json_error(err: KbaiError) -> bytes:
    return json.dumps(
        {"error": {"code": err.code, "message": err.message}}, ensure_ascii=False, separators=(",", ":")
    ).encode()


def _error(err: KbaiError) -> tuple[int, Headers, bytes]:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in auth_headers(err).items()]
    return err.status, headers, _json_error(err)


def required_scopes(query_string: bytes) -> tuple[str, ...]:
    """The ``?scope=`` values (repeatable), checked for number and length."""
    if not query_string:
        return ()
    wanted = tuple(v for k, v in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True) if k == "scope")
    if len(wanted) > MAX_SCOPES or any(len(s) > MAX_SCOPE_LENGTH for s in wanted):
        raise KbaiError(errors.VALIDATION, detail="Ask for at most 50 scopes of at most 100 characters.")
    return wanted


def header_text(value: str) -> bytes:
    """An external id as a header value: as is when it is printable ASCII, else percent-encoded UTF-8 (the
    product's ids may be any visible text; a header carries bytes that every proxy passes unchanged)."""
    if value.isascii() and value.isprintable() and "%" not in value:
        return value.encode("ascii")
    return quote(value, safe="".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%") + " ").encode("ascii")


class IdentityHeaders:
    """The 200 answer's identity headers per (token, effective scopes), built once (bounded)."""

    def __init__(self, services: Services) -> None:
        self._catalog_order = [p.key for p in services.catalog.permissions]
        self._built: dict[tuple[int, frozenset[str]], tuple[object, Headers]] = {}

    def headers(self, result: Verification) -> Headers:
        record = result.record
        assert record is not None
        key = (record.token_id, result.scopes)
        found = self._built.get(key)
        if found is not None and found[0] is record:
            return found[1]
        scopes = " ".join(k for k in self._catalog_order if k in result.scopes)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(_OK_BODY)).encode())]
        if record.service:  # owned by the tenant: no person to name
            headers.append((b"x-kbai-service-token", b"true"))
        else:
            headers += [
                (b"x-kbai-user", str(record.person_id).encode()),
                (b"x-kbai-user-email", record.email.encode("latin-1")),
            ]
        headers += [
            (b"x-kbai-tenant", str(record.tenant_id).encode()),
            (b"x-kbai-scopes", scopes.encode("latin-1")),
            (b"x-kbai-token-id", str(record.token_id).encode()),
            (b"cache-control", b"no-store"),
        ]
        if record.tenant_external_id is not None:
            headers.append((b"x-kbai-tenant-external-id", header_text(record.tenant_external_id)))
        if record.user_external_id is not None and not record.service:
            headers.append((b"x-kbai-user-external-id", header_text(record.user_external_id)))
        if len(self._built) >= 10_000:
            self._built.clear()
        self._built[key] = (record, headers)
        return headers


async def answer(
    services: Services,
    scope: Mapping[str, Any],
    identity: IdentityHeaders,
    authorization: str | None,
    user_agent: str | None,
) -> tuple[int, Headers, bytes, int | None]:
    """(status, headers, body, token id when served) of one check. Raises only for a server fault."""
    try:
        required = required_scopes(scope.get("query_string", b""))
        token = parse_bearer(authorization)
        if token is None:
            raise KbaiError(errors.NOT_AUTHENTICATED)
        ip = scope_ip(scope)
        try:
            result = await check_token_async(services, ip, token, required)
        except KbaiError as exc:
            # nginx only understands 2xx/401/403 from an auth subrequest: a limit is a 401 with the reason.
            if exc.code == "rate_limited":
                raise KbaiError(
                    errors.INVALID_TOKEN, description=exc.message, retry_after=exc.params["retry_after"]
                ) from None
            if exc.code == "quota_exhausted":
                status, headers, body = _error(KbaiError(errors.INVALID_TOKEN, description=exc.message, **exc.params))
                return status, [*headers, (b"x-kbai-quota-remaining", b"0")], body, None
            raise
        if not result.ok:
            raise errors.for_outcome(result.outcome.value, result.missing)
    except KbaiError as err:
        status, headers, body = _error(err)
        return status, headers, body, None
    record = result.record
    assert record is not None
    services.usage.record(record.token_id, services.clock.now(), ip, user_agent)
    if result.quota_remaining is not None:
        headers = [*identity.headers(result), (b"x-kbai-quota-remaining", str(result.quota_remaining).encode())]
        return 200, headers, _OK_BODY, record.token_id
    return 200, identity.headers(result), _OK_BODY, record.token_id


class ForwardAuth:
    """Pure ASGI in front of the app: answers ``/auth/check`` (any method, any sub-path) itself, and
    ``GET /api/v1/me`` when its token is warm (:class:`~kbai.gateway.me.MeFront`)."""

    def __init__(self, app: Any, services: Services) -> None:
        self.app = app
        self.services = services
        self.max_body = services.settings.max_body_bytes
        self.log_successes = services.settings.access_log_token_reads
        self.identity = IdentityHeaders(services)
        self.me = MeFront(services)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if not (path == PATH or path.startswith(PATH + "/")):
            # GET /api/v1/me with a warm token is answered here too (kbai.gateway.me); the rest goes on.
            if path == ME_PATH and scope["method"] == "GET" and await self.me.answer(scope, send):
                return
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        authorization = user_agent = given_id = length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif name == b"x-request-id":
                given_id = value
            elif name == b"content-length":
                length = value
            elif name == b"user-agent" and user_agent is None:
                user_agent = value.decode("latin-1")
        request_id = request_id_of(given_id)
        route = PATH if path == PATH else ROUTE_ANY
        method = scope["method"]
        if length is not None:
            try:
                too_big = int(length) > self.max_body
            except ValueError:
                too_big = True
            if too_big:
                await reject_too_large(send, self.max_body, request_id)
                self._done(scope, method, route, 413, started, request_id)
                return
        services = self.services
        logged_as = logs.REQUEST_ID.set(request_id)  # every log line of this check carries its id
        try:
            status, headers, body, token_id = await answer(services, scope, self.identity, authorization, user_agent)
        except OperationalError as exc:
            # The database is unreachable (a cold check): 503, as every other route answers then.
            log.warning("database unavailable on %s %s: %s", method, PATH, redact(str(exc.orig))[:200])
            err = KbaiError(errors.DATABASE_UNAVAILABLE)
            status, headers, body, token_id = err.status, [(b"retry-after", b"5")], _json_error(err), None
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
        except Exception as exc:  # noqa: BLE001 - a bug: 500 with the usual envelope, and logged
            log.error("unhandled %s on %s %s: %s", type(exc).__name__, method, PATH, redact(str(exc))[:500])
            body = (
                b'{"error":{"code":"internal_error","message":"Something went wrong on our side; it has been logged."}}'
            )
            status, headers, token_id = (
                500,
                [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                None,
            )
        else:
            if status != 200:
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *headers,
                ]
        finally:
            logs.REQUEST_ID.reset(logged_as)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, *SECURITY_HEADERS, (b"x-request-id", request_id.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        if token_id is None or self.log_successes:
            self._done(scope, method, route, status, started, request_id)
        else:
            services.metrics.served(method, route, status, time.perf_counter() - started)

    def _done(
        self, scope: dict[str, Any], method: str, route: str, status: int, started: float, request_id: str
    ) -> None:
        elapsed = time.perf_counter() - started
        self.services.metrics.served(method, route, status, elapsed)
        access_log(scope, status, elapsed, request_id)
