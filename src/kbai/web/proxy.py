"""The client's address behind a trusted proxy: ``X-Forwarded-For`` (or, when a proxy sends only that,
``X-Real-IP``) is believed only when it comes from one of ``KBAI_TRUSTED_PROXIES`` and only when it names
an IP address.

uvicorn's own ``ProxyHeadersMiddleware`` does the parsing (the right-most untrusted entry, ports and
brackets, ``X-Forwarded-Proto``), but it takes whatever text sits in the header: a proxy that passes a
client's ``X-Forwarded-For: =HYPERLINK(...)`` along would put that into the rate-limit keys, the
sessions table and the audit log (and from there into an admin's spreadsheet). Here anything that
``ipaddress`` does not read as an address is ignored and the peer's own address stays.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

_PEER = "kbai.peer"


@lru_cache(maxsize=4096)
def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ForwardedClient:
    """Outermost middleware: the request's ``client`` is the real client when a trusted proxy says so."""

    def __init__(self, app: Any, trusted_proxies: str) -> None:
        self.app = app
        # uvicorn types ASGI scopes as TypedDicts; kbai's middleware (like Starlette's) passes plain dicts.
        self._proxy = ProxyHeadersMiddleware(self._checked, trusted_hosts=trusted_proxies)  # type: ignore[arg-type]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope[_PEER] = scope.get("client")
        await self._proxy(scope, receive, send)  # type: ignore[arg-type]

    async def _checked(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        peer = scope.pop(_PEER, None)
        client = scope.get("client")
        if client is not peer and (not client or not is_ip(client[0])):
            scope["client"] = peer
        elif client is peer and peer and peer[0] in self._proxy.trusted_hosts:
            # A trusted proxy that sends X-Real-IP (nginx's `proxy_set_header X-Real-IP $remote_addr`) and no
            # X-Forwarded-For: that one address is the client. X-Forwarded-For wins when both are sent.
            real = _header(scope, b"x-real-ip")
            if real is not None and not _header(scope, b"x-forwarded-for") and is_ip(real):
                scope["client"] = (real, 0)
        await self.app(scope, receive, send)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            text: str = value.decode("latin-1").strip()
            return text
    return None
