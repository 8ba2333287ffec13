"""The OpenID Connect routes: ``GET /oidc/login`` (to the provider) and ``GET /oidc/callback`` (back).

Thin: they carry the request's ``next``, query and cookies to :mod:`kbai.identity` and turn the result into
a redirect with the session cookie, or an error page with a way back to the login page. A failed
callback clears the flow cookie and opens no session; ``kbai.identity`` has changed nothing.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from kbai import errors
from kbai.errors import KbaiError
from kbai.identity.signin import OidcSignIn
from kbai.web import prefix
from kbai.web.api import set_session_cookie
from kbai.web.auth import client_ip, services, session_principal
from kbai.web.pages import base as pages

router = APIRouter(include_in_schema=False)
FLOW_COOKIE = "kbai_oidc_flow"
CALLBACK = "/oidc/callback"
BACK = ("/login", "Back to log in")  # root-relative: error.html puts it under the prefix


def _sign_in(request: Request) -> OidcSignIn:
    found: OidcSignIn | None = getattr(services(request), "oidc", None)
    if found is None:
        raise KbaiError(errors.OIDC_NOT_CONFIGURED)
    return found


def _failed(request: Request, err: KbaiError) -> HTMLResponse:
    response = pages.render(request, "error.html", None, status=err.status, error=err, back=BACK)
    response.delete_cookie(FLOW_COOKIE, path=prefix.cookie_path(CALLBACK))
    return response


def redirect_uri(request: Request) -> str:
    """Where the provider sends the person back: on KBAI_PUBLIC_URL when it is set (what is registered at the
    provider), else this request's own origin."""
    public = services(request).settings.public_url
    return public + CALLBACK if public else str(request.url_for("oidc_callback"))


@router.get("/oidc/login", name="oidc_login")
def oidc_login(request: Request, next: str | None = None) -> Response:  # noqa: A002 - the query name
    """Start a sign-in: remember it in this browser and send the person to the provider's login page."""
    target = pages.safe_next(next)
    svc = services(request)
    try:
        sign_in = _sign_in(request)
        if session_principal(svc, request) is not None:
            return pages.see_other(target)
        # The flow keeps the browser path (prefix included) that the callback's safe_next reads.
        url, sealed = sign_in.begin(prefix.url(target), redirect_uri(request))
    except KbaiError as err:
        return _failed(request, err)
    response = pages.see_other(url)
    response.set_cookie(
        FLOW_COOKIE,
        sealed,
        max_age=600,
        httponly=True,
        samesite="lax",
        path=prefix.cookie_path(CALLBACK),
        secure=svc.settings.cookie_secure,
    )
    pages.no_store(response)
    return response


@router.get(CALLBACK, name="oidc_callback")
def oidc_callback(request: Request) -> Response:
    """Finish a sign-in: check it, let the person in (or not), and go where they were going."""
    svc = services(request)
    params = {k: v for k, v in request.query_params.items() if len(v) <= 4000}
    try:
        cookie, _info, target = _sign_in(request).finish(params, request.cookies.get(FLOW_COOKIE), client_ip(request))
    except KbaiError as err:
        return _failed(request, err)
    response = pages.see_other(pages.safe_next(target))
    set_session_cookie(response, cookie, svc.settings.session_ttl_seconds, svc.settings.cookie_secure)
    response.delete_cookie(FLOW_COOKIE, path=prefix.cookie_path(CALLBACK))
    pages.no_store(response)
    return response
