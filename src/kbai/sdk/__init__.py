"""SDK: protect another Python (ASGI/FastAPI) service's routes with kbai tokens.

Two halves. A *verifier* turns a presented token into an :class:`Identity` (user, email, tenant,
effective scopes, token id) or a :class:`Failure` carrying kbai's public error:
:class:`LocalVerifier` runs kbai's own pipeline in-process against the kbai database, and
:class:`IntrospectionVerifier` asks a running kbai over RFC 7662 with a service credential. Both
fail closed: when they cannot get an answer the request gets 503, never through. The *edge* is
:class:`KbaiAuthMiddleware` (401 for a missing or bad token, identity on ``request.state.kbai``)
and the FastAPI dependency :func:`require_scopes` (403 ``insufficient_scope``). Errors, messages
and RFC 6750 headers come from ``kbai.errors`` and ``kbai.web.errors``, so a client sees the same
answers here as from kbai itself. :func:`install` wires it all into an app in one call; see
``docs/sdk.md`` and ``examples/contacts_service.py``.
"""

from kbai.sdk.middleware import AuthError, KbaiAuthMiddleware, auth_error_handler, install, require_scopes
from kbai.sdk.verifiers import Failure, Identity, IntrospectionVerifier, LocalVerifier, Verifier

__all__ = [
    "AuthError",
    "Failure",
    "Identity",
    "IntrospectionVerifier",
    "KbaiAuthMiddleware",
    "LocalVerifier",
    "Verifier",
    "auth_error_handler",
    "install",
    "require_scopes",
]
