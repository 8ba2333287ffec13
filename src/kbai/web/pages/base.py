"""Shared by every page: templates and render, the page route class (failures become pages), sign-in
and CSRF form checks, redirects, navigation and the session flash."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Path as PathParam
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from starlette.exceptions import HTTPException as StarletteHTTPException

from kbai import __version__, errors
from kbai.access.catalog import REVIEW_TOKENS
from kbai.access.requests import AdminRequests
from kbai.errors import KbaiError
from kbai.services import Services
from kbai.store.audit import Actor
from kbai.web import brand, prefix
from kbai.web.api import MAX_ID
from kbai.web.auth import SESSION_COOKIE, Principal, services, session_principal

HERE = Path(__file__).parent.parent  # kbai/web: templates/ and static/
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
    "deactivated_kept": "User deactivated. Their sessions ended; the tokens you kept work on as service tokens of "
    "the tenant (API Keys), the others stopped working.",
    "reactivated": "User reactivated. They can log in again, and their tokens that were not revoked or expired "
    "work again.",
    "granted": "Permission granted.",
    "dismissed": "Request dismissed.",
    "asked": "Request sent. Your tenant's admins see it on their Roles and Users pages.",
    "revoked": "Token revoked. It stops working with the next request.",
    "paused": "Token paused. Every request with it gets 401 until you resume it; it still counts toward your limit.",
    "resumed": "Token resumed. It works again from the next request.",
    "service_paused": "Service token paused. Every request with it gets 401 until someone resumes it; it still "
    "counts toward the tenant's limit.",
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


def _take_flash(request: Request, p: Principal) -> dict[str, Any] | None:
    assert p.session is not None
    cookie = request.cookies.get(SESSION_COOKIE)
    return services(request).sessions.take_flash(p.session, cookie) if cookie else None


def _put_flash(request: Request, p: Principal, payload: dict[str, Any]) -> None:
    assert p.session is not None
    cookie = request.cookies.get(SESSION_COOKIE)
    assert cookie is not None  # page_user found the session through it
    services(request).sessions.put_flash(p.session, cookie, payload)


def my_roles(svc: Services, p: Principal) -> list[str]:
    """The names of the signed-in person's roles (shown to them: "open your role", says the help page)."""
    assert p.actor.user_id is not None
    return svc.access.get_user(Actor.operator(), p.actor.user_id).roles
