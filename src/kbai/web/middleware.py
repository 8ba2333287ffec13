"""One pure-ASGI middleware for every request: request id, body limit, security headers, metrics,
access log, and marking a token used once its request succeeded.

Every request is measured; every one is logged except a successful read-only token request (an
integration's traffic), which is logged only with ``KBAI_ACCESS_LOG_TOKEN_READS`` (``/auth/check``
follows the same rule in ``kbai.gateway.check``)."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from typing import Any

from starlette.exceptions import HTTPException

from kbai import logs
from kbai.errors import ErrorSpec, KbaiError
from kbai.services import Services
from kbai.tokenformat import redact
from kbai.web.answers import SECURITY_HEADERS, security_headers
from kbai.web.pages import base as pages

log = logging.getLogger("kbai.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class _FreshIds:
    """Fresh request ids, 32 random hex digits (``uuid4().hex``'s form), from the OS's CSPRNG 256 at a time.

    A request id is made for every request, and one system call per request cost more than the rest of a
    warm ``/auth/check``'s own work when measured on a VM (7-9 µs in place against 0.5 µs in a tight loop:
    the call leaves the caches and TLB cold for the code after it). Taking ids from a pool keeps it to one
    call per 256 requests; a forked child starts with an empty pool, so no two processes share an id."""

    BATCH = 256

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._ids = []
        self._lock = threading.Lock()  # another thread may have held it at the fork

    def __call__(self) -> str:
        while True:
            try:
                return self._ids.pop()  # atomic: two threads never get the same id
            except IndexError:
                with self._lock:
                    if not self._ids:
                        raw = os.urandom(16 * self.BATCH).hex()
                        self._ids = [raw[i : i + 32] for i in range(0, len(raw), 32)]


new_request_id = _FreshIds()


def request_id_of(given: bytes | None) -> str:
    """The caller's ``X-Request-Id`` when it is 1 to 64 safe characters, else a fresh one."""
    if given is not None:
        text = given.decode("latin-1")
        if _REQUEST_ID.fullmatch(text):
            return text
    return new_request_id()


class KbaiMiddleware:
    def __init__(self, app: Any, services: Services) -> None:
        self.app = app
        self.services = services
        self.max_body = services.settings.max_body_bytes
        self.log_token_reads = services.settings.access_log_token_reads
        from kbai.web.brand import logo_origin

        self.security_headers = security_headers(logo_origin(services.settings))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        request_id = request_id_of(headers.get(b"x-request-id"))
        status_holder = {"status": 500}

        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_body
            except ValueError:
                too_big = True
            if too_big:
                await reject_too_large(
                    send,
                    self.max_body,
                    request_id,
                    page=pages.is_page(scope["path"]),
                    scim=scope["path"].startswith("/scim/"),
                )
                self._log(scope, 413, started, request_id)
                return

        received = 0
        max_body = self.max_body

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    # An HTTPException (not a bare error) so that a body streamed without Content-Length
                    # gets the same 413 envelope as a declared one, whoever reads it (FastAPI re-raises it).
                    raise HTTPException(413, f"The request body is larger than {max_body} bytes.")
            return message

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                extra = list(message.get("headers", []))
                # A route may set a Content-Security-Policy of its own (the API docs pages); ours is the default.
                own_csp = any(name == b"content-security-policy" for name, _ in extra)
                extra.extend(h for h in self.security_headers if not (own_csp and h[0] == b"content-security-policy"))
                extra.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": extra}
            await send(message)

        scope.setdefault("state", {})["request_id"] = request_id
        logged_as = logs.REQUEST_ID.set(request_id)  # every log line of this request carries its id
        await self.app(scope, limited_receive, send_wrapper)
        logs.REQUEST_ID.reset(logged_as)  # (after an exception the request's task, and its context, ends)
        status = status_holder["status"]
        token_id = scope["state"].get("kbai_token_id")
        if token_id is not None and status < 400:
            client = scope.get("client") or (None, 0)
            self.services.usage.record(
                token_id,
                self.services.clock.now(),
                client[0],
                headers.get(b"user-agent", b"").decode("latin-1") or None,
            )
            if not self.log_token_reads and scope["method"] in ("GET", "HEAD"):
                # A successful token read (an integration's traffic) is counted, not logged line by line.
                self._log(scope, status, started, request_id, line=False)
                return
        self._log(scope, status, started, request_id)

    def _log(self, scope: dict[str, Any], status: int, started: float, request_id: str, *, line: bool = True) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("route")
        self.services.metrics.served(scope["method"], getattr(route, "path", "unmatched"), status, elapsed)
        if line:
            access_log(scope, status, elapsed, request_id)


def access_log(scope: dict[str, Any], status: int, elapsed: float, request_id: str) -> None:
    """One JSON line per request on the ``kbai.access`` logger (tokens in the path cut to their prefix)."""
    if log.isEnabledFor(logging.INFO):
        client = scope.get("client") or ("-", 0)
        path = redact(scope["path"])
        log.info(
            "%s %s %s",
            scope["method"],
            path,
            status,
            extra={
                "request_id": request_id,
                "method": scope["method"],
                "path": path,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "client": client[0],
            },
        )


async def reject_too_large(
    send: Any, max_body: int, request_id: str, *, page: bool = False, scim: bool = False
) -> None:
    await _reject(
        send, 413, "too_large", f"The request body is larger than {max_body} bytes.", request_id, page=page, scim=scim
    )


async def _reject(
    send: Any, status: int, code: str, message: str, request_id: str, *, page: bool = False, scim: bool = False
) -> None:
    if page:  # a form posted from a browser: answer with a page, as every other form failure is
        body = pages.standalone_error_page(KbaiError(ErrorSpec(code, status, "{message}"), message=message))
        content_type = b"text/html; charset=utf-8"
    elif scim:  # a SCIM client understands only RFC 7644's error schema
        body = json.dumps(
            {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": str(status), "detail": message}
        ).encode()
        content_type = b"application/scim+json"
    else:
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        content_type = b"application/json"
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
        (b"connection", b"close"),
        *SECURITY_HEADERS,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
