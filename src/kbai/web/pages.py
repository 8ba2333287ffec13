"""The server-rendered pages: login, System Settings, Roles, Users, API Keys (with rotation and
activity), the tenant's token inventory, the token policy and notifications.

Routes are thin: they check the session and the form's CSRF field, call the domain services with
the user's Actor, and render a Jinja2 template (autoescaped). Every failure a person can see is a
``KbaiError`` from ``kbai.errors``, shown in the page, never a traceback. Pages are never cached:
they carry per-user data, and the token-created page carries the one copy of a token.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup
from starlette.exceptions import HTTPException as StarletteHTTPException

from kbai import __version__, errors
from kbai.access.catalog import MANAGE_TOKENS, REVIEW_TOKENS, Catalog, Permission
from kbai.access.passwords import MIN_LENGTH as MIN_PASSWORD
from kbai.access.requests import AdminRequests
from kbai.access.service import require
from kbai.compare import same_secret
from kbai.errors import KbaiError
from kbai.lifecycle.activity import BASELINE_DAYS, DAYS, SHADES, heatmap_svg
from kbai.lifecycle.hygiene import LABELS as HYGIENE_LABELS
from kbai.lifecycle.hygiene import hygiene
from kbai.lifecycle.inventory import STATUSES, InventoryFilter
from kbai.services import Services
from kbai.store.audit import Actor
from kbai.tokenformat import redact
from kbai.tokens.policy import Policy, check_lifetime
from kbai.tokens.restrictions import MAX_ALLOWED_IPS, clean_allowlist, clean_description
from kbai.tokens.service import EXPIRY_PRESETS_DAYS, MAX_LIFETIME_DAYS, RECOMMENDED_EXPIRY_DAYS, TokenView
from kbai.validate import clean_email, clean_name
from kbai.web import brand, prefix
from kbai.web.api import MAX_ID, invite_member, set_session_cookie
from kbai.web.auth import SESSION_COOKIE, Principal, client_ip, services, session_principal

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
LOGIN_CSRF_COOKIE = "kbai_login_csrf"
HOME = "/system-settings"
TOKEN_EXAMPLES = ("Zapier production", "n8n nightly sync", "Local dev")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# An id in a page's address: out of range is "no such page" (never a database error).
Id = Annotated[int, PathParam(ge=1, le=MAX_ID)]

# One-word codes in the query string after a redirect; the words shown come from here, never the URL.
NOTICES = {
    "saved": "Saved. Everyone with this role has these permissions now, and so do their tokens.",
    "role_created": "Role created. Pick its permissions and save.",
    "user_created": "User created.",
    "roles_saved": "Roles saved.",
    "deactivated": "User deactivated. Their sessions ended and their tokens stopped working.",
    "reactivated": "User reactivated. They can log in again, and their tokens that were not revoked or expired "
    "work again.",
    "granted": "Permission granted.",
    "dismissed": "Request dismissed.",
    "asked": "Request sent. Your tenant's admins see it on their Roles and Users pages.",
    "revoked": "Token revoked. It stops working with the next request.",
    "paused": "Token paused. Every request with it gets 401 until you resume it; it still counts toward your limit.",
    "resumed": "Token resumed. It works again from the next request.",
    "admin_revoked": "Token revoked. It stops working with the next request; if it was someone else's, "
    "they are told in-app and by email.",
    "policy_saved": "Token policy saved. It applies to tokens created or rotated from now on.",
    "read": "Marked as read.",
    "all_read": "All notifications marked as read.",
    "scim_revoked": "Provisioning credential revoked. Your identity provider's next SCIM request is refused.",
}


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["day"] = lambda v: v.strftime("%b %-d, %Y") if v else ""
    env.filters["moment"] = lambda v: v.strftime("%b %-d, %Y %H:%M UTC") if v else ""
    env.filters["clock"] = lambda v: v.strftime("%H:%M UTC") if v else ""
    env.filters["iso"] = lambda v: v.strftime("%Y-%m-%dT%H:%M:%SZ") if v else ""
    env.globals["version"] = __version__
    env.globals["url"] = prefix.url  # every address in a page goes through it (KBAI_PUBLIC_URL's path)
    env.globals["brand"] = brand.Brand()  # defaults for pages rendered without a request (page_context sets them)
    env.globals["login"] = brand.LoginOptions()
    return env


templates = Jinja2Templates(env=_env(), context_processors=[brand.page_context])


class LoginRequired(Exception):
    def __init__(self, next_path: str) -> None:
        super().__init__("login required")
        self.next_path = next_path


class PageRoute(APIRoute):
    """Routes whose failures are pages: no session -> the login page, a KbaiError -> an error page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                if request.method == "POST":
                    given = request.headers.get("content-type")
                    if given is not None and given.split(";")[0].strip().lower() not in FORM_TYPES:
                        raise KbaiError(errors.UNSUPPORTED_MEDIA, expected=f"an HTML form ({' or '.join(FORM_TYPES)})")
                return await handler(request)
            except LoginRequired as exc:
                return RedirectResponse(login_url(exc.next_path), status_code=303)
            except KbaiError as err:
                return error_page(request, err)
            except RequestValidationError as exc:
                # A malformed id in the address, or a form field over its length limit.
                if request.method == "GET" or any(e.get("loc", ("",))[0] == "path" for e in exc.errors()):
                    return error_page(request, KbaiError(errors.NOT_FOUND, what="Page"))
                return error_page(
                    request,
                    KbaiError(
                        errors.VALIDATION,
                        detail="Something in the form is too long or not valid. Go back and check it.",
                    ),
                )
            except StarletteHTTPException as exc:
                # A body that cannot be read as a form (broken multipart) or is too large while streamed.
                if exc.status_code == 413:
                    limit = services(request).settings.max_body_bytes
                    return error_page(request, KbaiError(errors.TOO_LARGE, limit=limit))
                if exc.status_code == 400:
                    return error_page(request, KbaiError(errors.BAD_REQUEST, detail=FORM_UNREADABLE))
                raise

        return page_handler


router = APIRouter(route_class=PageRoute, include_in_schema=False)
FORM_UNREADABLE = "The form could not be read. Go back, reload the page and try again."


def is_page(path: str) -> bool:
    """Whether ``path`` belongs to the HTML pages (whose failures are pages, not JSON)."""
    path = prefix.local(path) or path
    return (
        path in ("/", "/login", "/logout")
        or path == HOME
        or path.startswith(HOME + "/")
        or path.startswith(("/oidc/", INVITATIONS + "/"))
    )


def standalone_error_page(err: KbaiError) -> bytes:
    """An error page without a request or session, for refusals made before routing (the body limit)."""
    html = templates.env.get_template("error.html").render(me=None, notice=None, error=err)
    return html.encode()


# ---- helpers ------------------------------------------------------------------------------------
def safe_next(value: str | None) -> str:
    """The page to go to after login, from a browser path (under the prefix, which is taken off); anything else
    (other sites, other paths, odd characters) goes home."""
    value = prefix.local(value) if value else None
    if (
        not value
        or len(value) > 300
        or not value.startswith("/")
        or value.startswith(("//", "/\\"))
        or any(ord(ch) < 0x21 or ch == "\\" for ch in value)
        # A browser resolves "/kbai/../x" (or %2e%2e) to "/x": out of the prefix.
        or any(seg in (".", "..") for seg in value.split("?")[0].lower().replace("%2e", ".").split("/"))
    ):
        return HOME
    return value


def login_url(next_path: str) -> str:
    """The login page's address, coming back to ``next_path`` (root-relative) afterwards."""
    login = prefix.url("/login")
    return login if next_path in ("/", HOME) else f"{login}?next={quote(prefix.url(next_path), safe='/')}"


def page_user(request: Request) -> Principal:
    """The signed-in person, or a redirect to the login page (raised)."""
    found = session_principal(services(request), request)
    if found is None:
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query and request.method == "GET" else "")
        raise LoginRequired(safe_next(nxt) if request.method == "GET" else HOME)
    return found


def check_form(request: Request, csrf_token: str) -> Principal:
    """A signed-in person whose form carries their session's CSRF token."""
    p = page_user(request)
    assert p.session is not None
    if not p.session.csrf_ok(csrf_token or None):
        raise KbaiError(errors.FORM_EXPIRED)
    return p


def admin_requests(svc: Services) -> AdminRequests:
    return AdminRequests(svc.access, svc.notifications)


INVENTORY = HOME + "/tokens"
TENANT_PICKER = HOME + "/tenant"
INVITATIONS = "/invitations"
INVITE_CSRF_COOKIE = "kbai_invite_csrf"
POLICY = HOME + "/token-policy"
NOTIFICATIONS = HOME + "/notifications"


EVERYTHING = "*"  # nav: shown to a member holding every permission of the tenant


def nav(
    p: Principal, path: str, counts: dict[str, int] | None = None, everything: frozenset[str] | None = None
) -> list[dict[str, Any]]:
    items = [
        ("Overview", HOME, None),
        ("Roles", "/system-settings/roles", "roles.read"),
        ("Users", "/system-settings/users", "users.read"),
        ("API Keys", "/system-settings/api-keys", None),
        ("All tokens", INVENTORY, REVIEW_TOKENS),
        ("Token policy", POLICY, "roles.manage"),
        ("Notifications", NOTIFICATIONS, None),
        ("Provisioning (SCIM)", HOME + "/provisioning", EVERYTHING),
    ]
    out = []
    for label, href, needed in items:
        if needed == EVERYTHING:
            allowed = everything is not None and everything <= p.actor.permissions
        else:
            allowed = needed is None or needed in p.actor.permissions
        if allowed:
            current = path == href if href == HOME else path == href or path.startswith(href + "/")
            out.append({"label": label, "href": href, "current": current, "count": (counts or {}).get(label, 0)})
    return out


def render(request: Request, name: str, p: Principal | None, status: int = 200, **ctx: Any) -> HTMLResponse:
    svc = services(request)
    base: dict[str, Any] = {"me": None}
    if p is not None:
        assert p.session is not None
        pending = 0
        if {"roles.read", "users.read"} & p.actor.permissions:
            pending = len(admin_requests(svc).pending(p.actor))
        assert p.actor.user_id is not None
        unread = svc.notifications.unread(p.actor.user_id)
        assert p.actor.person_id is not None
        others = [m for m in svc.access.memberships(p.actor.person_id) if m.active]
        base = {
            "me": p.actor,
            "tenant": p.session.tenant_name,
            "csrf_token": p.session.csrf_token,
            "tenant_id": p.actor.tenant_id,
            "memberships": others if len(others) > 1 else [],
            "nav": nav(
                p, prefix.route_path(request.scope), {"Roles": pending, "Notifications": unread}, svc.catalog.keys
            ),
            "pending_count": pending,
            "unread_count": unread,
            "perms": p.actor.permissions,
        }
    notice = NOTICES.get(request.query_params.get("done", ""))
    response = templates.TemplateResponse(request, name, {**base, "notice": notice, **ctx}, status_code=status)
    no_store(response)
    return response


def no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"


def error_page(request: Request, err: KbaiError) -> HTMLResponse:
    p = session_principal(services(request), request)
    return render(request, "error.html", p, status=err.status, error=err)


def see_other(path: str) -> RedirectResponse:
    """A 303 to ``path``: root-relative paths get the prefix, absolute URLs (the OIDC provider) stay."""
    return RedirectResponse(prefix.url(path), status_code=303)


def ids(values: list[str] | None, what: str) -> list[int]:
    out = []
    for v in values or []:
        if not v.isdigit() or len(v) > 18:
            raise KbaiError(errors.VALIDATION, detail=f"Unknown {what} in the form; reload the page and try again.")
        out.append(int(v))
    return out


def grouped(catalog: Catalog, only: frozenset[str] | None = None) -> list[tuple[str, list[Permission]]]:
    """The catalog's groups, cut to ``only`` when given; empty groups dropped."""
    groups = [(g, [p for p in ps if only is None or p.key in only]) for g, ps in catalog.groups()]
    return [(g, ps) for g, ps in groups if ps]


# ---- login / logout -----------------------------------------------------------------------------
@router.get("/")
def root(request: Request) -> Response:
    return see_other(HOME)


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:  # noqa: A002 - the query name
    svc = services(request)
    if session_principal(svc, request) is not None:
        return see_other(safe_next(next))
    return _login_page(request, safe_next(next), "")


def _login_page(request: Request, next_path: str, email: str, error: KbaiError | None = None) -> HTMLResponse:
    # Login CSRF: a random value in a cookie and in the form must match (double submit).
    value = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        None,
        status=error.status if error else 200,
        next=redact(next_path),
        email=redact(email),
        error=error,
        login_csrf=value,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        value,
        max_age=3600,
        httponly=True,
        samesite="strict",
        path=prefix.cookie_path("/login"),
        secure=services(request).settings.cookie_secure,
    )
    if error is not None and "retry_after" in error.params:
        response.headers["Retry-After"] = str(error.params["retry_after"])
    return response


@router.post("/login")
def login(
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=300)] = HOME,  # noqa: A002
) -> Response:
    svc = services(request)
    target = safe_next(next)
    cookie_value = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie_value or not csrf_token or not same_secret(csrf_token, cookie_value):
        return _login_page(request, target, email, KbaiError(errors.FORM_EXPIRED))
    try:  # the same failure limits as the API's, counted by the session service
        cookie, info = svc.sessions.login(email, password, client_ip(request))
    except KbaiError as err:
        if err.status == 429:
            svc.metrics.rate_limited.labels("login").inc()
        return _login_page(request, target, email, err)
    assert info.person_id is not None
    if sum(m.active for m in svc.access.memberships(info.person_id)) > 1:  # several tenants: pick one first
        target = TENANT_PICKER + ("" if target == HOME else f"?next={quote(target, safe='/')}")
    response = see_other(target)
    set_session_cookie(response, cookie, svc.settings.session_ttl_seconds, svc.settings.cookie_secure)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=prefix.cookie_path("/login"))
    return response


@router.post("/logout")
def logout(request: Request, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    p = check_form(request, csrf_token)
    assert p.session is not None
    services(request).sessions.logout(p.session, client_ip(request))
    response = see_other("/login")
    response.delete_cookie(SESSION_COOKIE, path=prefix.cookie_path())
    return response


# ---- tenants: the picker after login, and the switch in the header -------------------------------
@router.get(TENANT_PICKER)
def tenant_picker(request: Request, next: str | None = None) -> Response:  # noqa: A002 - the query name
    p = page_user(request)
    assert p.actor.person_id is not None
    tenants = [m for m in services(request).access.memberships(p.actor.person_id) if m.active]
    return render(request, "tenant_picker.html", p, tenants=tenants, next=redact(safe_next(next)))


@router.post(TENANT_PICKER)
def switch_tenant(
    request: Request,
    tenant: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=300)] = HOME,  # noqa: A002
) -> Response:
    """A new session in the chosen tenant (new cookie and CSRF token; the old session ends)."""
    p = check_form(request, csrf_token)
    assert p.session is not None
    svc = services(request)
    if not tenant.isascii() or not tenant.isdigit() or len(tenant) > 10:
        raise KbaiError(errors.VALIDATION, detail="Pick one of your tenants from the list.")
    cookie, _info = svc.sessions.switch(
        p.session, request.cookies.get(SESSION_COOKIE) or "", int(tenant), client_ip(request)
    )
    target = safe_next(next)
    if target.startswith(TENANT_PICKER):
        target = HOME
    response = see_other(target)
    set_session_cookie(response, cookie, svc.settings.session_ttl_seconds, svc.settings.cookie_secure)
    return response


# ---- invitations: a new member sets a password, an existing person confirms with their login ------
@router.get(INVITATIONS + "/{secret}")
def invitation_page(request: Request, secret: Annotated[str, PathParam(max_length=200)]) -> Response:
    found = services(request).access.invitation(secret)
    return _invitation_page(request, secret, found)


def _invitation_page(request: Request, secret: str, found: Any, error: KbaiError | None = None) -> HTMLResponse:
    value = secrets.token_urlsafe(24)
    response = render(
        request,
        "invitation.html",
        None,
        status=error.status if error else 200,
        invitation=found,
        secret=secret,
        error=error,
        invite_csrf=value,
        min_password=MIN_PASSWORD,
    )
    response.set_cookie(
        INVITE_CSRF_COOKIE,
        value,
        max_age=3600,
        httponly=True,
        samesite="strict",
        path=INVITATIONS,
        secure=services(request).settings.cookie_secure,
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@router.post(INVITATIONS + "/{secret}")
def accept_invitation(
    request: Request,
    secret: Annotated[str, PathParam(max_length=200)],
    password: Annotated[str, Form(max_length=1024)] = "",
    password_again: Annotated[str | None, Form(max_length=1024)] = None,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    svc = services(request)
    found = svc.access.invitation(secret)
    cookie_value = request.cookies.get(INVITE_CSRF_COOKIE, "")
    if not cookie_value or not csrf_token or not same_secret(csrf_token, cookie_value):
        return _invitation_page(request, secret, found, KbaiError(errors.FORM_EXPIRED))
    try:
        if found.sets_password and password != (password_again or ""):
            raise KbaiError(errors.VALIDATION, detail="The two passwords are not the same. Type it twice.")
        cookie, _info = svc.sessions.accept_invitation(secret, password, client_ip(request))
    except KbaiError as err:
        if err.code == "invitation_invalid":
            raise
        return _invitation_page(request, secret, found, err)
    response = see_other(HOME)
    set_session_cookie(response, cookie, svc.settings.session_ttl_seconds, svc.settings.cookie_secure)
    response.delete_cookie(INVITE_CSRF_COOKIE, path=INVITATIONS)
    return response


# ---- System Settings ----------------------------------------------------------------------------
@router.get("/system-settings")
def settings_home(request: Request) -> Response:
    p = page_user(request)
    return render(request, "settings.html", p, my_roles=my_roles(services(request), p))


# ---- roles --------------------------------------------------------------------------------------
@router.get("/system-settings/roles")
def roles_page(request: Request) -> Response:
    p = page_user(request)
    return _roles_page(request, p)


def _roles_page(
    request: Request, p: Principal, error: KbaiError | None = None, new_name: str = "", field: str | None = None
) -> HTMLResponse:
    if error is not None and "roles.read" not in p.actor.permissions:
        raise error  # no page to show it on: the error page says what went wrong
    svc = services(request)
    assert p.actor.tenant_id is not None
    roles = svc.access.list_roles(p.actor, p.actor.tenant_id)
    return render(
        request,
        "roles.html",
        p,
        status=error.status if error else 200,
        roles=roles,
        catalog_size=len(svc.catalog.permissions),
        requests=admin_requests(svc).pending(p.actor),
        error=error if field is None else None,
        field_errors={field: error} if field else {},
        new_name=redact(new_name),
        labels={perm.key: perm.label for perm in svc.catalog.permissions},
    )


def _role_name(value: str) -> str:
    """The new role's name, checked with the person's words for the usual mistakes (empty, too long)."""
    text = value.strip()
    if not text:
        raise KbaiError(errors.FIELD_ROLE_NAME_EMPTY)
    if len(text) > NAME_LIMIT:
        raise KbaiError(errors.FIELD_NAME_TOO_LONG, length=len(text), limit=NAME_LIMIT)
    try:
        return clean_name(value, "role name")
    except KbaiError as err:
        raise _person_words(err, "role name", "role name") from None


@router.post("/system-settings/roles")
def create_role(
    request: Request,
    name: Annotated[str, Form(max_length=1000)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    assert p.actor.tenant_id is not None
    require(p.actor, "roles.manage", "create roles", p.actor.tenant_id)
    try:
        clean = _role_name(name)
        role = services(request).access.create_role(p.actor, p.actor.tenant_id, clean, [])
    except KbaiError as err:
        if err.code == "forbidden":
            raise
        if err.code == "already_exists":
            err = KbaiError(errors.FIELD_ROLE_NAME_TAKEN, name=name.strip())
        return _roles_page(request, p, err, name, field="name")
    return see_other(f"/system-settings/roles/{role.id}?done=role_created")


@router.get("/system-settings/roles/{role_id}")
def role_page(request: Request, role_id: Id) -> Response:
    p = page_user(request)
    return _role_page(request, p, role_id)


def _role_page(
    request: Request, p: Principal, role_id: int, error: KbaiError | None = None, checked: list[str] | None = None
) -> HTMLResponse:
    if error is not None and "roles.read" not in p.actor.permissions:
        raise error
    svc = services(request)
    role = svc.access.get_role(p.actor, role_id)
    members = None
    if "users.read" in p.actor.permissions:
        assert p.actor.tenant_id is not None
        members = [u for u in svc.access.list_users(p.actor, p.actor.tenant_id) if role.name in u.roles]
    waiting = [r for r in admin_requests(svc).pending(p.actor) if any(rid == role.id for rid, _ in r.roles)]
    return render(
        request,
        "role.html",
        p,
        status=error.status if error else 200,
        role=role,
        groups=grouped(svc.catalog),
        checked=set(role.permissions if checked is None else checked),
        is_admin_role=role.builtin and role.name == "Admin",
        members=members,
        requests=waiting,
        error=error,
    )


@router.post("/system-settings/roles/{role_id}")
def save_role(
    request: Request,
    role_id: Id,
    permissions: Annotated[list[str] | None, Form()] = None,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    try:
        services(request).access.update_role(p.actor, role_id, permissions or [])
    except KbaiError as err:
        if err.code in ("forbidden", "not_found"):
            raise
        return _role_page(request, p, role_id, err, permissions or [])
    return see_other(f"/system-settings/roles/{role_id}?done=saved")


# ---- "Ask an admin" requests --------------------------------------------------------------------
@router.post("/system-settings/requests/{request_id}/grant")
def grant_request(
    request: Request,
    request_id: Id,
    role_id: Annotated[str, Form(max_length=20)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    (rid,) = ids([role_id or "0"], "role")
    admin_requests(services(request)).grant(p.actor, request_id, rid)
    return see_other(f"/system-settings/roles/{rid}?done=granted")


@router.post("/system-settings/requests/{request_id}/dismiss")
def dismiss_request(
    request: Request, request_id: Id, csrf_token: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    p = check_form(request, csrf_token)
    admin_requests(services(request)).dismiss(p.actor, request_id)
    return see_other("/system-settings/roles?done=dismissed")


# ---- users --------------------------------------------------------------------------------------
@router.get("/system-settings/users")
def users_page(request: Request) -> Response:
    p = page_user(request)
    return _users_page(request, p)


def _users_page(
    request: Request,
    p: Principal,
    error: KbaiError | None = None,
    *,
    status: int | None = None,
    form: dict[str, Any] | None = None,
    invitation: dict[str, Any] | None = None,
    field: str | None = None,
) -> HTMLResponse:
    if error is not None and "users.read" not in p.actor.permissions:
        raise error
    svc = services(request)
    assert p.actor.tenant_id is not None
    users = svc.access.list_users(p.actor, p.actor.tenant_id)
    # Assigning roles needs their names; people who manage users may see them without roles.read.
    reader = p.actor if "roles.read" in p.actor.permissions else Actor.operator()
    roles = svc.access.list_roles(reader, p.actor.tenant_id)
    # Only roles whose permissions you hold can be handed out, only by someone who holds all a person holds.
    assignable, manageable = svc.access.manageable(p.actor, p.actor.tenant_id)
    response = render(
        request,
        "users.html",
        p,
        status=status or (error.status if error else 200),
        users=users,
        roles=roles,
        requests=admin_requests(svc).pending(p.actor),
        error=error if field is None else None,
        field_errors={field: error} if field else {},
        form=form or {"email": "", "roles": []},
        invitation=invitation,
        token_counts=svc.tokens.counts_by_user(p.actor.tenant_id),
        assignable=assignable,
        manageable=manageable,
    )
    return response


@router.post("/system-settings/users")
def create_user(
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    roles: Annotated[list[str] | None, Form()] = None,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str | None, Form(max_length=1024)] = None,
) -> Response:
    """Adds the person (created when new) and shows their one-time invitation link: never a password, and the
    same page whether the person existed in another tenant or not."""
    p = check_form(request, csrf_token)
    assert p.actor.tenant_id is not None
    svc = services(request)
    field = None
    try:
        require(p.actor, "users.manage", "create users", p.actor.tenant_id)
        if password is not None:  # (an old form or a script): a member's password is theirs to choose
            raise KbaiError(errors.NO_PASSWORD_FOR_MEMBERS)
        field = "email"
        try:
            clean_email(email)
        except KbaiError:
            raise KbaiError(errors.FIELD_EMAIL_INVALID) from None
        field = None
        view, url, _expires = invite_member(svc, request, p.actor, email, ids(roles, "role"))
    except KbaiError as err:
        if err.code == "forbidden" and err.params.get("action") == "create users":
            raise
        if err.code == "already_exists":
            field, err = "email", KbaiError(errors.FIELD_EMAIL_TAKEN, email=redact(email.strip().lower()))
        return _users_page(request, p, err, form={"email": redact(email), "roles": roles or []}, field=field)
    # Shown once, like a token: no redirect, nothing cached.
    return _users_page(
        request, p, status=201, invitation={"email": view.email, "url": url, "emailed": svc.outbox.mail_enabled}
    )


@router.post("/system-settings/users/{user_id}/roles")
def set_user_roles(
    request: Request,
    user_id: Id,
    roles: Annotated[list[str] | None, Form()] = None,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    try:
        services(request).access.set_user_roles(p.actor, user_id, ids(roles, "role"))
    except KbaiError as err:
        return _users_page(request, p, err)
    return see_other("/system-settings/users?done=roles_saved")


@router.post("/system-settings/users/{user_id}/deactivate")
def deactivate_user(request: Request, user_id: Id, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    p = check_form(request, csrf_token)
    try:
        services(request).access.deactivate_user(p.actor, user_id)
    except KbaiError as err:
        return _users_page(request, p, err)
    if user_id == p.actor.user_id:
        return see_other("/login")
    return see_other("/system-settings/users?done=deactivated")


@router.post("/system-settings/users/{user_id}/reactivate")
def reactivate_user(request: Request, user_id: Id, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    p = check_form(request, csrf_token)
    try:
        services(request).access.reactivate_user(p.actor, user_id)
    except KbaiError as err:
        return _users_page(request, p, err)
    return see_other("/system-settings/users?done=reactivated")


# ---- API keys -----------------------------------------------------------------------------------
API_KEYS = "/system-settings/api-keys"


@router.get("/system-settings/api-keys")
def api_keys_page(request: Request, done: str | None = None, token: str | None = None) -> Response:
    p = page_user(request)
    svc = services(request)
    created = rotated = None
    flash = _take_flash(request, p)
    try:
        if flash and flash.get("kind") == "created":
            created = (svc.tokens.get(p.actor, int(flash["id"])), str(flash["token"]))
        elif flash and flash.get("kind") == "rotated":
            rotated = (
                svc.tokens.get(p.actor, int(flash["id"])),
                str(flash["token"]),
                svc.tokens.get(p.actor, int(flash["old_id"])),
            )
    except (KbaiError, KeyError, TypeError, ValueError):
        created = rotated = None  # a flash about a token that is gone: nothing to show
    revoked_id = (
        int(token) if done == "revoked" and token and token.isascii() and token.isdigit() and len(token) <= 10 else None
    )
    return _api_keys_page(request, p, created=created, rotated=rotated, revoked_id=revoked_id)


def _take_flash(request: Request, p: Principal) -> dict[str, Any] | None:
    assert p.session is not None
    cookie = request.cookies.get(SESSION_COOKIE)
    return services(request).sessions.take_flash(p.session, cookie) if cookie else None


def _put_flash(request: Request, p: Principal, payload: dict[str, Any]) -> None:
    assert p.session is not None
    cookie = request.cookies.get(SESSION_COOKIE)
    assert cookie is not None  # page_user found the session through it
    services(request).sessions.put_flash(p.session, cookie, payload)


def _expiry_choices(now: datetime) -> list[dict[str, str]]:
    out = [
        {"value": str(d), "label": f"{d} days", "until": (now + timedelta(days=d)).strftime("%b %-d, %Y")}
        for d in EXPIRY_PRESETS_DAYS
    ]
    return out


# How long the old token keeps working after a rotation: (form value in seconds, label, what the dialog says).
GRACE_CHOICES = (
    ("0", "None", "stops working immediately"),
    ("3600", "1 hour", "keeps working for 1 hour"),
    ("86400", "24 hours", "keeps working for 24 hours"),
    ("604800", "7 days", "keeps working for 7 days"),
)
DEFAULT_GRACE = "86400"
# Table order: what works first, then what stopped (newest first within each).
STATUS_ORDER = {"active": 0, "paused": 1, "expired": 2, "revoked": 3}


@dataclass(frozen=True)
class TokenRow:
    """A row of the API Keys table: the token, its hygiene badges and its rotation links."""

    view: TokenView
    badges: list[tuple[str, str]]  # (flag, label)
    from_id: int | None
    from_view: TokenView | None
    to_id: int | None
    to_view: TokenView | None
    stops_at: datetime | None  # rotated, still in its grace period: when it stops working
    lifetimes: list[dict[str, Any]]  # the rotate form's choices for the new token's lifetime


def _allowed(policy: Policy, now: datetime, expiry: datetime | None) -> bool:
    """Whether the tenant's policy allows a token expiring at ``expiry`` (the domain's rule, asked, not copied)."""
    try:
        check_lifetime(policy, now, expiry)
    except KbaiError:
        return False
    return True


def _span(delta: timedelta) -> str:
    days = round(delta.total_seconds() / 86400)
    if days >= 1:
        return f"{days} day{'s' if days != 1 else ''}"
    hours = max(1, round(delta.total_seconds() / 3600))
    return f"{hours} hour{'s' if hours != 1 else ''}"


def _rotate_lifetimes(view: TokenView, policy: Policy, now: datetime) -> list[dict[str, Any]]:
    """The new token's lifetime choices: the old lifetime (the API's default) and the presets the policy allows."""
    out: list[dict[str, Any]] = []
    lifetime = None if view.expires_at is None else view.expires_at - view.created_at
    if _allowed(policy, now, None if lifetime is None else now + lifetime):
        same = "no expiration" if lifetime is None else _span(lifetime)
        out.append({"value": "same", "label": f"Same as now ({same})", "default": True})
    presets = [d for d in EXPIRY_PRESETS_DAYS if _allowed(policy, now, now + timedelta(days=d))]
    pick = (
        None
        if out
        else (RECOMMENDED_EXPIRY_DAYS if RECOMMENDED_EXPIRY_DAYS in presets else (presets[-1] if presets else None))
    )
    for d in presets:
        out.append(
            {
                "value": str(d),
                "label": f"{d} days (until {(now + timedelta(days=d)).strftime('%b %-d, %Y')})",
                "default": d == pick,
            }
        )
    return out


def table_badges(view: TokenView, now: datetime) -> list[tuple[str, str]]:
    """Hygiene badges for a table row; "Never used" is left out, the Last used column already says Never."""
    return [(f, HYGIENE_LABELS[f]) for f in hygiene(view, now) if f != "never_used"]


def _token_rows(svc: Services, tokens: list[TokenView], policy: Policy, now: datetime) -> list[TokenRow]:
    by_id = {t.id: t for t in tokens}
    successors = svc.tokens.rotated_to(by_id)
    rows = []
    for t in sorted(tokens, key=lambda v: (STATUS_ORDER.get(v.status, 9), -v.id)):
        to_id = successors.get(t.id)
        grace = t.status == "active" and t.revoked_at is not None
        rows.append(
            TokenRow(
                view=t,
                badges=table_badges(t, now),
                from_id=t.rotated_from_id,
                from_view=by_id.get(t.rotated_from_id or 0),
                to_id=to_id,
                to_view=by_id.get(to_id or 0),
                stops_at=t.revoked_at if grace else None,
                lifetimes=_rotate_lifetimes(t, policy, now) if t.status == "active" and to_id is None else [],
            )
        )
    return rows


def _policy_form(policy: Policy, now: datetime) -> dict[str, Any]:
    """What the create form shows of the tenant's policy: the presets it allows, the latest custom date, and the
    recommendation (90 days, or the longest the policy allows when that is less)."""
    presets = [c for c in _expiry_choices(now) if _allowed(policy, now, now + timedelta(days=int(c["value"])))]
    values = [c["value"] for c in presets]
    default = (
        str(RECOMMENDED_EXPIRY_DAYS) if str(RECOMMENDED_EXPIRY_DAYS) in values else (values[-1] if values else "custom")
    )
    latest = max_message = None
    if policy.max_lifetime_days is not None:
        latest = (now + timedelta(days=policy.max_lifetime_days)).date().isoformat()
        max_message = KbaiError(errors.POLICY_MAX_LIFETIME, days=policy.max_lifetime_days, advice="").message
    return {
        "policy": policy,
        "presets": presets,
        "default_expiry": default,
        "allow_never": _allowed(policy, now, None),
        "latest_date": latest,
        "max_message": max_message,
        "recommended": default,
        "recommended_is_90": default == str(RECOMMENDED_EXPIRY_DAYS),
    }


def _lag(seconds: float) -> str:
    """The Last used flush interval in words: "1 minute", "30 seconds"."""
    whole = max(1, round(seconds))
    if whole >= 60 and whole % 60 == 0:
        minutes = whole // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{whole} second{'s' if whole != 1 else ''}"


def my_roles(svc: Services, p: Principal) -> list[str]:
    """The names of the signed-in person's roles (shown to them: "open your role", says the help page)."""
    assert p.actor.user_id is not None
    return svc.access.get_user(Actor.operator(), p.actor.user_id).roles


def _api_keys_page(
    request: Request,
    p: Principal,
    error: KbaiError | None = None,
    *,
    status: int | None = None,
    form: dict[str, Any] | None = None,
    created: tuple[TokenView, str] | None = None,
    rotated: tuple[TokenView, str, TokenView] | None = None,
    error_at: str = "create",
    field: str | None = None,
    revoked_id: int | None = None,
) -> HTMLResponse:
    svc = services(request)
    assert p.actor.user_id is not None and p.actor.tenant_id is not None
    now = svc.clock.now()
    can_manage = MANAGE_TOKENS in p.actor.permissions
    policy = svc.policies.get(p.actor.tenant_id)
    tokens: list[TokenView] = svc.tokens.list(p.actor.user_id, limit=1000)
    revoked_view = next((t for t in tokens if t.id == revoked_id and t.status == "revoked"), None)
    roles = my_roles(svc, p)
    asked = admin_requests(svc).open_requests(p.actor.user_id)
    ctx: dict[str, Any] = {
        "can_manage": can_manage,
        "rows": _token_rows(svc, tokens, policy, now),
        "error": error if field is None else None,
        "field_errors": {field: error} if field else {},
        "error_at": error_at if can_manage else "top",
        "created": created,
        "rotated": rotated,
        "labels": {perm.key: perm.label for perm in svc.catalog.permissions},
        "grace_choices": GRACE_CHOICES,
        "default_grace": DEFAULT_GRACE,
        "my_roles": roles,
        "revoked_view": revoked_view,
        "lag": _lag(svc.settings.last_used_flush_seconds),
        "asked": [(svc.catalog.label(k), k, at) for k, at in asked.items()],
    }
    if revoked_view is not None:
        ctx["notice"] = None  # the page names the token instead of the generic words
    if can_manage:
        active, limit = svc.tokens.allowance(p.actor.user_id)
        rules = _policy_form(policy, now)
        usable = svc.catalog.token_usable(p.actor.permissions)
        # What an admin could add for tokens: usable permissions of the catalog this person lacks.
        askable = [
            perm
            for perm in svc.catalog.permissions
            if not perm.session_only and perm.key not in p.actor.permissions and perm.key not in asked
        ]
        ctx.update(
            active=active,
            limit=limit,
            at_limit=active >= limit,
            support_email=svc.tokens.support_email,
            groups=grouped(svc.catalog, usable),
            askable=askable,
            examples=TOKEN_EXAMPLES,
            tomorrow=(now.date() + timedelta(days=1)).isoformat(),
            form=form
            or {
                "name": "",
                "scopes": [],
                "expiry": rules["default_expiry"],
                "expires_on": "",
                "identity_only": False,
                "description": "",
                "allowed_ips": "",
                "self_rotate": False,
            },
            require_allowlist=policy.require_allowlist,
            max_allowed_ips=MAX_ALLOWED_IPS,
            **rules,
        )
    else:
        ctx["asked_at"] = asked.get(MANAGE_TOKENS)
    response = render(request, "api_keys.html", p, status=status or (error.status if error else 200), **ctx)
    return response


# Where each error of the create form is shown: under its field, or (None) above the form.
CREATE_FIELDS = {
    "name_taken": "name",
    "unknown_scope": "scopes",
    "unheld_scope": "scopes",
    "duplicate_scope": "scopes",
    "session_only_scope": "scopes",
    "policy_expiration_required": "expiry",
    "policy_max_lifetime": "expiry",
    "validation_error": "expiry",
    "invalid_cidr": "allowed_ips",
    "policy_allowlist_required": "allowed_ips",
}


def _person_words(err: KbaiError, field: str, label: str) -> KbaiError:
    """A domain message about ``field`` ("name must not …") as a sentence ("The name must not …")."""
    if err.code == "validation_error" and err.message.startswith(field + " "):
        return KbaiError(errors.VALIDATION, detail=f"The {label} {err.message[len(field) + 1 :]}")
    return err


def _token_name(value: str) -> str:
    """The create form's name, checked with the person's words for the usual mistakes (empty, too long)."""
    text = value.strip()
    if not text:
        raise KbaiError(errors.FIELD_TOKEN_NAME_EMPTY)
    if len(text) > NAME_LIMIT:
        raise KbaiError(errors.FIELD_NAME_TOO_LONG, length=len(text), limit=NAME_LIMIT)
    try:
        return clean_name(value, "name")
    except KbaiError as err:
        raise _person_words(err, "name", "name") from None


NAME_LIMIT = 100


@router.post("/system-settings/api-keys")
def create_token(
    request: Request,
    name: Annotated[str, Form(max_length=1000)] = "",
    scopes: Annotated[list[str] | None, Form()] = None,
    identity_only: Annotated[str, Form(max_length=10)] = "",
    expiry: Annotated[str, Form(max_length=20)] = "",
    expires_on: Annotated[str, Form(max_length=40)] = "",
    description: Annotated[str, Form(max_length=2000)] = "",
    allowed_ips: Annotated[str, Form(max_length=3000)] = "",
    self_rotate: Annotated[str, Form(max_length=10)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    svc = services(request)
    identity = identity_only.lower() in TRUTHY
    # Echoed back on an error: a pasted token must not come back in the page (cut to its display prefix).
    form = {
        "name": redact(name),
        "scopes": scopes or [],
        "expiry": expiry,
        "expires_on": redact(expires_on),
        "identity_only": identity,
        "description": redact(description),
        "allowed_ips": redact(allowed_ips),
        "self_rotate": self_rotate.lower() in TRUTHY,
    }
    field = None
    try:
        field = "name"
        clean = _token_name(name)
        field = "scopes"
        if not scopes and not identity and MANAGE_TOKENS in p.actor.permissions:
            raise KbaiError(errors.FIELD_SCOPES_NONE)
        field = "expiry"
        days, until = _expiry(expiry, expires_on, svc.clock.now().date())
        field = "description"
        note = _person_words_of(clean_description, description, "description")
        field = "allowed_ips"
        ranges = clean_allowlist(_lines(allowed_ips))
        field = None
        view, plaintext = svc.tokens.create(
            p.actor,
            clean,
            scopes or [],
            expires_in_days=days,
            expires_at=until,
            description=note,
            allowed_ips=ranges,
            self_rotate=self_rotate.lower() in TRUTHY,
        )
    except KbaiError as err:
        if field is None:
            field = CREATE_FIELDS.get(err.code)
            if err.code == "name_taken":
                err = KbaiError(errors.FIELD_TOKEN_NAME_TAKEN, name=err.params.get("name", ""))
        return _api_keys_page(request, p, err, form=form, field=field)
    # Post/redirect/get: the token travels to the next page in the session's sealed flash, never in a URL,
    # so reloading that page never submits the form again.
    _put_flash(request, p, {"kind": "created", "id": view.id, "token": plaintext})
    return see_other(API_KEYS)


def _expiry(choice: str, on: str, today: date) -> tuple[int | None, str | None]:
    """The form's expiration choice as (expires_in_days, expires_at) for TokenService.create."""
    if choice == "never":
        return None, None
    if choice == "custom":
        try:
            when = date.fromisoformat(on.strip())
        except ValueError:
            raise KbaiError(errors.FIELD_EXPIRY_DATE_MISSING) from None
        if when <= today:
            raise KbaiError(errors.FIELD_EXPIRY_DATE_PAST)
        if when > today + timedelta(days=MAX_LIFETIME_DAYS):
            raise KbaiError(errors.FIELD_EXPIRY_DATE_TOO_FAR, days=MAX_LIFETIME_DAYS)
        return None, when.isoformat()
    if choice.isdigit() and int(choice) in EXPIRY_PRESETS_DAYS:
        return int(choice), None
    raise KbaiError(errors.FIELD_EXPIRY_CHOICE)


@router.post("/system-settings/api-keys/ask-admin")
def ask_admin(
    request: Request,
    note: Annotated[str, Form(max_length=2000)] = "",
    permission: Annotated[str, Form(max_length=100)] = MANAGE_TOKENS,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    svc = services(request)
    wanted = permission or MANAGE_TOKENS
    # From API Keys one asks to make tokens, or for something a token can carry; never for managing people.
    if wanted != MANAGE_TOKENS and wanted in svc.catalog.session_only:
        raise KbaiError(errors.ASK_NOT_FOR_TOKENS, permission=wanted)
    admin_requests(svc).ask(p.actor, wanted, note or None)
    return see_other(f"{API_KEYS}?done=asked")


@router.post("/system-settings/api-keys/{token_id}/revoke")
def revoke_token(request: Request, token_id: Id, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    p = check_form(request, csrf_token)
    view = services(request).tokens.revoke(p.actor, token_id)
    return see_other(f"{API_KEYS}?{urlencode({'done': 'revoked', 'token': view.id})}")


def _lines(text: str) -> list[str]:
    """The allowlist box: one range per line (commas and spaces separate too)."""
    return [part for part in text.replace(",", " ").split() if part]


def _person_words_of(check: Callable[[object], Any], value: str, field: str) -> Any:
    try:
        return check(value)
    except KbaiError as err:
        raise _person_words(err, field, field) from None


@router.post("/system-settings/api-keys/{token_id}/pause")
def pause_token(request: Request, token_id: Id, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    p = check_form(request, csrf_token)
    try:
        view = services(request).tokens.pause(p.actor, token_id)
    except KbaiError as err:
        if err.code == "not_found":
            raise
        return _api_keys_page(request, p, err, error_at="table")
    return see_other(f"{API_KEYS}?{urlencode({'done': 'paused'})}#token-{view.id}")


@router.post("/system-settings/api-keys/{token_id}/resume")
def resume_token(request: Request, token_id: Id, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    p = check_form(request, csrf_token)
    try:
        view = services(request).tokens.resume(p.actor, token_id)
    except KbaiError as err:
        if err.code == "not_found":
            raise
        return _api_keys_page(request, p, err, error_at="table")
    return see_other(f"{API_KEYS}?{urlencode({'done': 'resumed'})}#token-{view.id}")


@router.post("/system-settings/api-keys/{token_id}/rotate")
def rotate_token(
    request: Request,
    token_id: Id,
    grace: Annotated[str, Form(max_length=20)] = "",
    lifetime: Annotated[str, Form(max_length=20)] = "same",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    svc = services(request)
    try:
        seconds = _grace(grace)
        days = _lifetime(lifetime)
        new, plaintext, old = svc.tokens.rotate(p.actor, token_id, seconds, expires_in_days=days)
    except KbaiError as err:
        if err.code == "not_found":
            raise
        return _api_keys_page(request, p, err, error_at="table")
    # Shown once, like a new token, on the page this redirects to (post/redirect/get; never in a URL).
    _put_flash(request, p, {"kind": "rotated", "id": new.id, "old_id": old.id, "token": plaintext})
    return see_other(API_KEYS)


def _grace(value: str) -> int:
    for seconds, _label, _say in GRACE_CHOICES:
        if value == seconds:
            return int(seconds)
    raise KbaiError(
        errors.VALIDATION, detail="Choose how long the old token keeps working: none, 1 hour, 24 hours or 7 days."
    )


def _lifetime(value: str) -> int | None:
    """The rotate form's lifetime choice: None keeps the old lifetime (the domain's default)."""
    if value in ("", "same"):
        return None
    if value.isascii() and value.isdigit() and int(value) in EXPIRY_PRESETS_DAYS:
        return int(value)
    raise KbaiError(errors.VALIDATION, detail="Choose the new token's lifetime from the list.")


# ---- a token's activity -------------------------------------------------------------------------
def _cell(day: int, hour: int) -> str:
    return f"{DAYS[day]} {hour:02d}:00–{(hour + 1) % 24:02d}:00 UTC"


@router.get("/system-settings/api-keys/{token_id}/activity")
def activity_page(request: Request, token_id: Id) -> Response:
    """Your own token, or (with developer.review_tokens) any token of your tenant; others are 404."""
    p = page_user(request)
    svc = services(request)
    activity = svc.activity.for_token(p.actor, token_id)  # decides who may see it
    owner_email = None
    try:
        view = svc.tokens.get(p.actor, token_id)
    except KbaiError:
        row = svc.inventory.get(p.actor, token_id)  # a reviewer looking at someone else's token
        view, owner_email = row.view, row.owner_email
    baseline_end = view.created_at + timedelta(days=BASELINE_DAYS)
    peak = max(max(r) for r in activity.grid)
    busiest = [_cell(d, h) for d in range(7) for h in range(24) if peak and activity.grid[d][h] == peak]
    return render(
        request,
        "activity.html",
        p,
        token=view,
        owner_email=owner_email,
        activity=activity,
        heatmap=Markup(heatmap_svg(activity.grid)),  # built by the domain: escaped, no script, no style attribute
        shades=SHADES,
        peak=peak,
        busiest=busiest,
        active_hours=len(activity.hourly),
        baseline_end=baseline_end,
        learning=svc.clock.now() < baseline_end,
        unusual=[_cell(d, h) for d, h in activity.unusual_hours],
        badges=[(f, HYGIENE_LABELS[f]) for f in hygiene(view, svc.clock.now())],
    )


# ---- the tenant's token inventory (developer.review_tokens) -------------------------------------
INVENTORY_PAGE_SIZE = 100
TRUTHY = ("1", "on", "true", "yes")


def _inventory_query(
    owner: str | None, status: str | None, stale: str | None, expiring_soon: str | None
) -> dict[str, str]:
    """The filters as they go back into a URL (only the meaningful ones)."""
    out: dict[str, str] = {}
    if owner and owner.strip():
        out["owner"] = owner.strip()
    if status:
        out["status"] = status
    if stale and stale.lower() in TRUTHY:
        out["stale"] = "1"
    if expiring_soon and expiring_soon.lower() in TRUTHY:
        out["expiring_soon"] = "1"
    return out


@router.get(INVENTORY)
def inventory_page(
    request: Request,
    owner: str | None = None,
    status: str | None = None,
    stale: str | None = None,
    expiring_soon: str | None = None,
    cursor: str | None = None,
    done: str | None = None,
    token: str | None = None,
) -> Response:
    p = page_user(request)
    require(p.actor, REVIEW_TOKENS, "review the tenant's tokens")
    svc = services(request)
    revoked = None
    if done == "admin_revoked" and token and token.isascii() and token.isdigit() and len(token) <= 10:
        try:
            found = svc.inventory.get(p.actor, int(token))
            revoked = found if found.view.status == "revoked" else None
        except KbaiError:
            revoked = None
    query = _inventory_query(owner, status, stale, expiring_soon)
    error = None
    rows = []
    more = False
    owner_given = query.get("owner", "")
    if len(owner_given) > 320 or any(not ch.isprintable() for ch in owner_given):
        error = KbaiError(
            errors.VALIDATION, detail="The owner filter is an email (at most 320 characters) or a user id."
        )
    elif status and status not in STATUSES:
        error = KbaiError(errors.VALIDATION, detail="Pick a status from the list: active, paused, expired or revoked.")
    elif cursor is not None and not (
        cursor.isascii() and cursor.isdigit() and len(cursor) <= 10 and 1 <= int(cursor) <= MAX_ID
    ):
        error = KbaiError(errors.VALIDATION, detail="That page of the list does not exist; start again from the first.")
    else:
        where = InventoryFilter(
            owner=query.get("owner"),
            status=query.get("status"),
            stale="stale" in query,
            expiring_soon="expiring_soon" in query,
        )
        rows = svc.inventory.list(
            p.actor, where, before_id=int(cursor) if cursor else None, limit=INVENTORY_PAGE_SIZE + 1
        )
        more = len(rows) > INVENTORY_PAGE_SIZE
        rows = rows[:INVENTORY_PAGE_SIZE]
    now = svc.clock.now()
    return render(
        request,
        "inventory.html",
        p,
        status=error.status if error else 200,
        error=error,
        filters=query,
        rows=[(r, table_badges(r.view, now)) for r in rows],
        labels={perm.key: perm.label for perm in svc.catalog.permissions},
        lag=_lag(svc.settings.last_used_flush_seconds),
        statuses=STATUSES,
        export_url="/api/v1/admin/tokens/export" + (f"?{urlencode(query)}" if query else ""),
        older_url=f"{INVENTORY}?{urlencode({**query, 'cursor': rows[-1].view.id})}" if more else None,
        first_url=f"{INVENTORY}?{urlencode(query)}" if cursor and not error else None,
        query_string=urlencode(query),
        revoked=revoked,
        **({"notice": None} if revoked else {}),
    )


@router.post(INVENTORY + "/{token_id}/revoke")
def inventory_revoke(
    request: Request,
    token_id: Id,
    owner: Annotated[str, Form(max_length=320)] = "",
    status: Annotated[str, Form(max_length=20)] = "",
    stale: Annotated[str, Form(max_length=10)] = "",
    expiring_soon: Annotated[str, Form(max_length=10)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    services(request).inventory.revoke(p.actor, token_id)  # audited; the owner is notified
    back = _inventory_query(owner, status if status in STATUSES else None, stale, expiring_soon)
    return see_other(f"{INVENTORY}?{urlencode({'done': 'admin_revoked', 'token': token_id, **back})}")


# ---- the tenant's token policy (roles.manage) ---------------------------------------------------
POLICY_ACTION = "change the token policy"


def _policy_page(
    request: Request,
    p: Principal,
    error: KbaiError | None = None,
    *,
    form: dict[str, Any] | None = None,
    secret: str | None = None,
) -> HTMLResponse:
    assert p.actor.tenant_id is not None
    policy = services(request).policies.get(p.actor.tenant_id)
    if form is None:
        form = {
            "max_lifetime_days": "" if policy.max_lifetime_days is None else str(policy.max_lifetime_days),
            "expiration_required": policy.expiration_required,
            "auto_revoke_unused_days": ""
            if policy.auto_revoke_unused_days is None
            else str(policy.auto_revoke_unused_days),
            "webhook_url": policy.webhook_url or "",
        }
    return render(
        request,
        "policy.html",
        p,
        status=error.status if error else 200,
        error=error,
        policy=policy,
        form=form,
        secret=secret,
    )


@router.get(POLICY)
def policy_page(request: Request) -> Response:
    p = page_user(request)
    require(p.actor, "roles.manage", POLICY_ACTION)
    return _policy_page(request, p)


def _days_field(value: str, label: str) -> int | None:
    """A "number of days" field: blank is "no rule"; the domain checks the range."""
    text = value.strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 6:
        raise KbaiError(errors.VALIDATION, detail=f"{label} must be a whole number of days, or blank for no rule.")
    return int(text)


@router.post(POLICY)
def save_policy(
    request: Request,
    max_lifetime_days: Annotated[str, Form(max_length=40)] = "",
    expiration_required: Annotated[str, Form(max_length=10)] = "",
    auto_revoke_unused_days: Annotated[str, Form(max_length=40)] = "",
    webhook_url: Annotated[str, Form(max_length=4000)] = "",
    new_webhook_secret: Annotated[str, Form(max_length=10)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    p = check_form(request, csrf_token)
    require(p.actor, "roles.manage", POLICY_ACTION)
    assert p.actor.tenant_id is not None
    required = expiration_required.lower() in TRUTHY
    form = {
        "max_lifetime_days": max_lifetime_days,
        "expiration_required": required,
        "auto_revoke_unused_days": auto_revoke_unused_days,
        "webhook_url": webhook_url,
    }
    try:
        _policy, secret = services(request).policies.set(
            p.actor,
            p.actor.tenant_id,
            max_lifetime_days=_days_field(max_lifetime_days, "Maximum lifetime"),
            expiration_required=required,
            auto_revoke_unused_days=_days_field(auto_revoke_unused_days, "Auto-revoke"),
            webhook_url=webhook_url.strip() or None,
            new_webhook_secret=new_webhook_secret.lower() in TRUTHY,
        )
    except KbaiError as err:
        if err.code == "forbidden":
            raise
        return _policy_page(request, p, err, form=form)
    if secret is not None:
        # The signing secret is shown this once: a page, not a redirect, and never cached.
        return _policy_page(request, p, secret=secret)
    return see_other(f"{POLICY}?done=policy_saved")


# ---- notifications ------------------------------------------------------------------------------
NOTIFICATION_KINDS = {
    "token.expiry_reminder": "Expiry reminder",
    "token.leaked": "Leak report",
    "token.revoked_by_admin": "Revoked by an admin",
    "token.auto_revoked": "Auto-revoked",
    "access.granted": "Access granted",
}
NOTIFICATIONS_PAGE_SIZE = 50


@router.get(NOTIFICATIONS)
def notifications_page(request: Request, cursor: str | None = None) -> Response:
    p = page_user(request)
    assert p.actor.user_id is not None
    svc = services(request)
    if cursor is not None and not (
        cursor.isascii() and cursor.isdigit() and len(cursor) <= 10 and 1 <= int(cursor) <= MAX_ID
    ):
        raise KbaiError(errors.VALIDATION, detail="That page of the list does not exist; start again from the first.")
    items = svc.notifications.list(
        p.actor.user_id, before_id=int(cursor) if cursor else None, limit=NOTIFICATIONS_PAGE_SIZE + 1
    )
    more = len(items) > NOTIFICATIONS_PAGE_SIZE
    items = items[:NOTIFICATIONS_PAGE_SIZE]
    return render(
        request,
        "notifications.html",
        p,
        items=items,
        kinds=NOTIFICATION_KINDS,
        older_url=f"{NOTIFICATIONS}?cursor={items[-1].id}" if more else None,
        paged=cursor is not None,
    )


@router.post(NOTIFICATIONS + "/read-all")
def read_all_notifications(request: Request, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    p = check_form(request, csrf_token)
    assert p.actor.user_id is not None
    services(request).notifications.mark_read(p.actor.user_id)
    return see_other(f"{NOTIFICATIONS}?done=all_read")


@router.post(NOTIFICATIONS + "/{notification_id}/read")
def read_notification(
    request: Request, notification_id: Id, csrf_token: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    p = check_form(request, csrf_token)
    assert p.actor.user_id is not None
    svc = services(request)
    if svc.notifications.get(p.actor.user_id, notification_id) is None:
        raise KbaiError(errors.NOT_FOUND, what="Notification")
    svc.notifications.mark_read(p.actor.user_id, notification_id)
    return see_other(f"{NOTIFICATIONS}?done=read")
