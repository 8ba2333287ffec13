"""The edge of another service: ASGI middleware that authenticates, and ``require_scopes`` that authorizes.

:class:`KbaiAuthMiddleware` turns ``Authorization: Bearer`` into an :class:`Identity` on
``request.state.kbai`` or answers 401 (RFC 6750) / 503 itself, so no route runs for a bad token.
:func:`require_scopes` is the FastAPI dependency that demands scopes (403 ``insufficient_scope``);
without the middleware it authenticates on its own with ``app.state.kbai_verifier``.
:func:`install` wires both, plus the error handler, in one call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from kbai import errors
from kbai.errors import KbaiError
from kbai.sdk.verifiers import NO_TOKEN, Failure, Identity, Verifier
from kbai.tokens.restrictions import ip_allowed, networks
from kbai.web.answers import auth_headers, error_response, parse_bearer

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
STATE_KEY = "kbai"

# For the OpenAPI document only; the header is parsed by kbai.web.answers.bearer_token.
_bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="kbai", description="A kbai API token: `Authorization: Bearer kbai_pk_...`"
)


class AuthError(HTTPException):
    """A refused request from :func:`require_scopes`.

    An ``HTTPException`` so that an app without :func:`install` still answers with the right status
    and ``WWW-Authenticate``; :func:`auth_error_handler` renders it as ``{"error": {"code", "message"}}``.
    """

    def __init__(self, error: KbaiError) -> None:
        super().__init__(status_code=error.status, detail=error.message, headers=auth_headers(error) or None)
        self.error = error


async def auth_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuthError)
    return error_response(exc.error)


async def authenticate(verifier: Verifier, connection: HTTPConnection) -> Identity | KbaiError:
    """The identity behind the request's Bearer token, or the public error to refuse it with."""
    client = connection.client
    return await _authenticate(verifier, connection.headers.get("authorization"), client.host if client else None)


async def _authenticate(verifier: Verifier, authorization: str | None, client_host: str | None) -> Identity | KbaiError:
    """:func:`authenticate` from the raw ``Authorization`` value and client address (the middleware's
    hot path reads both straight from the ASGI scope, without building a connection object)."""
    try:
        token = parse_bearer(authorization)
    except KbaiError as exc:
        return exc
    if token is None:
        return KbaiError(NO_TOKEN)
    result = await verifier.verify(token)
    if isinstance(result, Failure):
        return result.error
    # kbai cannot see this service's clients: the token's allowlist is enforced here, on the address
    # the ASGI server gives (behind a proxy, run it with its proxy-headers option for the real client).
    if result.allowed_ips is not None and (
        client_host is None or not ip_allowed(networks(result.allowed_ips), client_host)
    ):
        return errors.for_outcome("ip_not_allowed")
    return result


def _lifespan_receive(verifier: Verifier, receive: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
    """``receive`` that starts the verifier on lifespan startup and stops (flushes) it on shutdown."""

    async def wrapped() -> dict[str, Any]:
        message: dict[str, Any] = await receive()
        if message["type"] == "lifespan.startup":
            await verifier.start()
        elif message["type"] == "lifespan.shutdown":
            await verifier.stop()
        return message

    return wrapped


class KbaiAuthMiddleware:
    """Pure ASGI: every HTTP and WebSocket request outside ``exempt_paths`` needs a good token.

    ``exempt_paths`` are exact paths (``"/healthz"``), or prefixes when they end in ``*``
    (``"/static/*"``). A request on an exempt path passes untouched; :func:`require_scopes` on such
    a route still authenticates by itself. The verifier is started and stopped with the app's lifespan.
    """

    def __init__(self, app: ASGIApp, verifier: Verifier, exempt_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.verifier = verifier
        paths = tuple(exempt_paths)
        self._exact = frozenset(p for p in paths if not p.endswith("*"))
        self._prefixes = tuple(p[:-1] for p in paths if p.endswith("*"))

    def is_exempt(self, path: str) -> bool:
        if path in self._exact:
            return True
        return bool(self._prefixes) and path.startswith(self._prefixes)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, _lifespan_receive(self.verifier, receive), send)
            return
        if kind not in ("http", "websocket") or self.is_exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":  # the first one, as Starlette's Headers.get reads it
                authorization = value.decode("latin-1")
                break
        client = scope.get("client")
        found = await _authenticate(self.verifier, authorization, client[0] if client else None)
        if isinstance(found, KbaiError):
            if kind == "websocket":
                await receive()  # websocket.connect; closing before accept makes the server answer 403
                await send({"type": "websocket.close", "code": 1008})
                return
            await error_response(found)(scope, receive, send)
            return
        scope = {**scope, "state": {**(scope.get("state") or {}), STATE_KEY: found}}
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, send_status if kind == "http" else send)
        # "Last used" means the last successful request, so a refused or failed one does not count.
        if kind == "http" and status < 400:
            self.verifier.record_use(found)


class _VerifierLifespan:
    """Only starts and stops the verifier with the app (for apps using require_scopes alone)."""

    def __init__(self, app: ASGIApp, verifier: Verifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            receive = _lifespan_receive(self.verifier, receive)
        await self.app(scope, receive, send)


def require_scopes(*scopes: str) -> Callable[..., Awaitable[Identity]]:
    """A FastAPI dependency: the caller's :class:`Identity`, holding every one of ``scopes``.

    ``Depends(require_scopes("contacts.read"))``; with no scopes it only demands a good token.
    Behind :class:`KbaiAuthMiddleware` it reads the identity the middleware found; otherwise it
    verifies the token itself with ``request.app.state.kbai_verifier``.
    """
    for scope in scopes:
        if not isinstance(scope, str) or not scope or any(ch.isspace() for ch in scope):
            raise ValueError(f"scopes are permission keys like 'contacts.read', not {scope!r}")
    wanted = tuple(dict.fromkeys(scopes))

    async def dependency(
        request: Request,
        _credentials: HTTPAuthorizationCredentials | None = Depends(_bearer_scheme),  # noqa: B008
    ) -> Identity:
        identity = getattr(request.state, STATE_KEY, None)
        verifier: Verifier | None = None
        if not isinstance(identity, Identity):
            verifier = getattr(request.app.state, "kbai_verifier", None)
            if verifier is None:
                raise RuntimeError(
                    "require_scopes needs KbaiAuthMiddleware or app.state.kbai_verifier; see kbai.sdk.install"
                )
            found = await authenticate(verifier, request)
            if isinstance(found, KbaiError):
                raise AuthError(found)
            identity = found
            setattr(request.state, STATE_KEY, identity)
        missing = identity.missing(wanted)
        if missing:
            raise AuthError(errors.for_outcome("insufficient_scope", missing))
        if verifier is not None:
            # Without the middleware there is no response status to wait for: count it as used now.
            verifier.record_use(identity)
        return identity

    dependency.__qualname__ = dependency.__name__ = f"require_scopes({', '.join(wanted)})"
    return dependency


def install(app: FastAPI, verifier: Verifier, *, exempt_paths: Iterable[str] = (), middleware: bool = True) -> None:
    """Protect ``app`` with kbai tokens: verifier on ``app.state``, error handler, middleware, lifespan.

    With ``middleware=False`` only routes that depend on :func:`require_scopes` are protected.
    """
    app.state.kbai_verifier = verifier
    app.add_exception_handler(AuthError, auth_error_handler)
    if middleware:
        app.add_middleware(KbaiAuthMiddleware, verifier=verifier, exempt_paths=tuple(exempt_paths))
    else:
        app.add_middleware(_VerifierLifespan, verifier=verifier)
