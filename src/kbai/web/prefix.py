"""Serving kbai under the path of ``KBAI_PUBLIC_URL`` (``https://app.example.com/kbai`` -> ``/kbai``).

One mechanism, Starlette's ``root_path``: :class:`ServeUnder`, in front of everything, takes requests
whose path starts with the prefix, marks the prefix as the request's ``root_path`` (routing, mounts
and ``url_for`` then work as if at the root) and remembers it for this request; code below builds every
address it hands out (redirects, links in pages, form actions, cookie paths, assets) with :func:`url`,
which puts the current request's prefix in front of a root-relative path. Code keeps thinking in
root-relative paths (``/system-settings/api-keys``); what leaves kbai carries the prefix. The health
routes answer at the root as well; any other path outside the prefix is a 404 saying where kbai is.
Without a prefix :class:`ServeUnder` is not installed, the prefix is ``""`` and nothing changes.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

from kbai.web.answers import SECURITY_HEADERS

# The prefix of the request being served: set by ServeUnder for the request's whole task (sync
# routes run in a thread pool that copies the context), "" outside a prefixed app.
_ROOT: ContextVar[str] = ContextVar("kbai_root_path", default="")
ALSO_AT_ROOT = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})


def url(path: str) -> str:
    """``path`` (root-relative, "/system-settings") as the browser must ask for it; other values unchanged."""
    if not path.startswith("/") or path.startswith("//"):
        return path
    return _ROOT.get() + path


def cookie_path(path: str = "/") -> str:
    """A cookie's Path: under the prefix ("/kbai" for "/", "/kbai/login" for "/login")."""
    prefix = _ROOT.get()
    return (prefix or "/") if path == "/" else prefix + path


def local(path: str) -> str | None:
    """A browser path (prefix included) as the root-relative path code thinks in; None when outside the prefix."""
    prefix = _ROOT.get()
    if not prefix:
        return path
    if path.startswith(prefix + "/"):
        return path[len(prefix) :]
    return None


def route_path(scope: MutableMapping[str, Any]) -> str:
    """The request's path without the prefix (what the routes are declared as)."""
    path: str = scope["path"]
    prefix = scope.get("root_path", "")
    if prefix and path.startswith(prefix):
        return path[len(prefix) :] or "/"
    return path


class ServeUnder:
    """Pure ASGI, outermost but for the client-address fix: answers only under ``prefix`` (and the health
    routes at the root); marks the prefix as the request's root path."""

    def __init__(self, app: Any, prefix: str) -> None:
        from kbai import errors

        self.app = app
        self.prefix = prefix
        self.under = prefix + "/"
        spec = errors.NOT_UNDER_PREFIX
        self.body = json.dumps(
            {"error": {"code": spec.code, "message": spec.template.format(prefix=prefix)}}, ensure_ascii=False
        ).encode()
        self.status = spec.status

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan (kbai has no websocket routes)
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(self.under):
            scope["root_path"] = self.prefix
            marked = _ROOT.set(self.prefix)
            try:
                await self.app(scope, receive, send)
            finally:
                _ROOT.reset(marked)
            return
        if path in ALSO_AT_ROOT:
            await self.app(scope, receive, send)
            return
        if path == self.prefix:
            # The bare prefix: to its home, as "/" is without a prefix.
            query = scope.get("query_string") or b""
            await self._answer(send, 308, b"", [(b"location", self.under.encode() + (b"?" + query if query else b""))])
            return
        await self._answer(send, self.status, self.body, [(b"content-type", b"application/json")])

    async def _answer(self, send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS],
            }
        )
        await send({"type": "http.response.body", "body": body})
