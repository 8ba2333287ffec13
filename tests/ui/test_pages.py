"""The pages in-process (FastAPI TestClient on the ``services`` fixture), on both backends:
access control, CSRF, escaping, the last-admin refusal, the no-permission view and the forms."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from kbai import errors
from kbai.app import create_app
from kbai.clock import FrozenClock
from kbai.services import Services
from kbai.store.audit import Actor
from kbai.store.models import AdminRequest, AuditEvent, Token
from tests.conftest import World

# The rules the issue names (access, CSRF, escaping, last admin, no permission) run on both backends;
# the rest of the page behaviour is backend-independent and runs on SQLite only, to stay fast.
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])
PAGES = ["/system-settings", "/system-settings/roles", "/system-settings/users", "/system-settings/api-keys"]
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
TOKEN_RE = re.compile(r"kbai_pk_[0-9a-f]{64}")


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services, start_background=False), follow_redirects=False) as c:
        yield c


def login(c: TestClient, email: str, password: str) -> str:
    """Log in through the form; returns the session's CSRF token (from a page's hidden field)."""
    c.cookies.clear()
    form = c.get("/login")
    login_csrf = CSRF_RE.search(form.text).group(1)  # type: ignore[union-attr]
    r = c.post(
        "/login", data={"email": email, "password": password, "csrf_token": login_csrf, "next": "/system-settings"}
    )
    assert r.status_code == 303 and r.headers["location"] == "/system-settings", r.text[:500]
    return csrf_of(c, "/system-settings")


def csrf_of(c: TestClient, path: str) -> str:
    return CSRF_RE.search(c.get(path).text).group(1)  # type: ignore[union-attr]


def as_admin(c: TestClient) -> str:
    return login(c, "admin@acme.test", "admin-password-1")


def as_dev(c: TestClient) -> str:
    return login(c, "dev@acme.test", "dev-password-1")


def make_member(world: World, email: str = "member@acme.test") -> int:
    view, _ = world.services.access.create_user(world.admin, world.tenant_id, email, "member-password-1", ["Member"])
    return view.id


def alert(html: str) -> str:
    found = re.search(r'role="alert">([^<]*)<', html)
    assert found, "no alert on the page"
    return found.group(1).replace("&#39;", "'").replace("&amp;", "&")


# ---- access control -----------------------------------------------------------------------------
def test_pages_need_a_session(client: TestClient, world: World) -> None:
    for path in [*PAGES, f"/system-settings/roles/{world.dev_role_id}"]:
        r = client.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"] == ("/login" if path == "/system-settings" else f"/login?next={path}")
    assert client.get("/").headers["location"] == "/system-settings"
    # A token is no session: pages never accept one.
    _, token = world.services.tokens.create(world.dev, "Script", ["users.read"])
    for method, path in (("GET", "/system-settings/api-keys"), ("POST", "/system-settings/api-keys")):
        r = client.request(
            method,
            path,
            data={"name": "x", "expiry": "never"} if method == "POST" else None,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), path
    assert len(world.services.tokens.list(world.dev.user_id or 0)) == 1


@SQLITE_ONLY
def test_login_remembers_where_you_were_going(client: TestClient, world: World) -> None:
    r = client.get("/system-settings/api-keys")
    assert r.headers["location"] == "/login?next=/system-settings/api-keys"
    page = client.get(r.headers["location"])
    assert 'name="next" value="/system-settings/api-keys"' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]


@SQLITE_ONLY
def test_login_never_sends_you_off_site(client: TestClient, world: World) -> None:
    for target in ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x", "/\tx"]:
        client.cookies.clear()
        csrf = CSRF_RE.search(client.get("/login").text).group(1)  # type: ignore[union-attr]
        r = client.post(
            "/login", data={"email": "dev@acme.test", "password": "dev-password-1", "csrf_token": csrf, "next": target}
        )
        assert r.status_code == 303 and r.headers["location"] == "/system-settings", target


@SQLITE_ONLY
def test_wrong_password_shows_the_message(client: TestClient, world: World) -> None:
    csrf = CSRF_RE.search(client.get("/login").text).group(1)  # type: ignore[union-attr]
    r = client.post("/login", data={"email": "dev@acme.test", "password": "nope-nope-nope", "csrf_token": csrf})
    assert r.status_code == 401
    assert alert(r.text) == errors.INVALID_CREDENTIALS.template
    assert "kbai_session" not in r.cookies


@SQLITE_ONLY
def test_login_form_needs_its_csrf_field(client: TestClient, world: World) -> None:
    client.get("/login")
    r = client.post("/login", data={"email": "dev@acme.test", "password": "dev-password-1"})
    assert r.status_code == 403
    assert alert(r.text) == errors.FORM_EXPIRED.template
    assert "kbai_session" not in r.cookies


@SQLITE_ONLY
def test_logout_ends_the_session(client: TestClient, world: World) -> None:
    csrf = as_dev(client)
    assert client.post("/logout", data={}).status_code == 403  # no CSRF field: refused
    assert client.get("/system-settings").status_code == 200
    r = client.post("/logout", data={"csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/system-settings").status_code == 303


@SQLITE_ONLY
def test_pages_without_the_permission_explain_why(client: TestClient, world: World) -> None:
    make_member(world)
    login(client, "member@acme.test", "member-password-1")
    nav = client.get("/system-settings").text
    assert 'href="/system-settings/roles"' not in nav and 'href="/system-settings/users"' not in nav
    for path, permission in (("/system-settings/roles", "roles.read"), ("/system-settings/users", "users.read")):
        r = client.get(path)
        assert r.status_code == 403
        assert r.headers["content-type"].startswith("text/html")
        assert f"You need the {permission} permission" in r.text


@SQLITE_ONLY
def test_unknown_role_is_a_page_not_json(client: TestClient, world: World) -> None:
    as_admin(client)
    for path in ("/system-settings/roles/99999", "/system-settings/roles/abc"):
        r = client.get(path)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("text/html")
        assert "not found" in r.text


# ---- CSRF on every form -------------------------------------------------------------------------
def test_forms_without_csrf_are_refused_and_change_nothing(client: TestClient, world: World) -> None:
    svc = world.services
    as_admin(client)
    admin_role_id = svc.access.list_roles(world.admin, world.tenant_id)[0].id
    dev = svc.access.user_by_email("dev@acme.test")
    assert dev is not None
    attempts = [
        ("/system-settings/api-keys", {"name": "x", "scopes": ["users.read"], "expiry": "90"}),
        ("/system-settings/roles", {"name": "Sneaky"}),
        (f"/system-settings/roles/{world.dev_role_id}", {"permissions": ["roles.manage"]}),
        ("/system-settings/users", {"email": "new@acme.test", "password": "password-password"}),
        (f"/system-settings/users/{dev.id}/roles", {"roles": [str(admin_role_id)]}),
        (f"/system-settings/users/{dev.id}/deactivate", {}),
        ("/system-settings/api-keys/ask-admin", {}),
        ("/logout", {}),
    ]
    for path, data in attempts:
        for token in (None, "wrong-token"):
            body = dict(data) if token is None else {**data, "csrf_token": token}
            r = client.post(path, data=body)
            assert r.status_code == 403, path
            assert errors.FORM_EXPIRED.template.replace("'", "&#39;") in r.text, path
    assert [r.name for r in svc.access.list_roles(world.admin, world.tenant_id)] == ["Admin", "Member", "Developers"]
    assert svc.access.get_role(world.admin, world.dev_role_id).permissions == [
        "developer.manage_tokens",
        "users.read",
        "roles.read",
    ]
    assert [u.email for u in svc.access.list_users(world.admin, world.tenant_id)] == [
        "admin@acme.test",
        "dev@acme.test",
    ]
    assert svc.access.get_user(world.admin, dev.id).roles == ["Developers"]
    assert svc.tokens.list(world.admin.user_id or 0) == []


@SQLITE_ONLY
def test_revoke_without_csrf_is_refused(client: TestClient, world: World) -> None:
    view, _ = world.services.tokens.create(world.dev, "Local dev", ["users.read"])
    csrf = as_dev(client)
    assert client.post(f"/system-settings/api-keys/{view.id}/revoke").status_code == 403
    assert world.services.tokens.get(world.dev, view.id).status == "active"
    r = client.post(f"/system-settings/api-keys/{view.id}/revoke", data={"csrf_token": csrf})
    assert r.status_code == 303
    assert world.services.tokens.get(world.dev, view.id).status == "revoked"
    assert r.headers["location"] == f"/system-settings/api-keys?done=revoked&token={view.id}"
    page = client.get(r.headers["location"]).text
    assert f"Token “Local dev” (<code>{view.prefix}</code>) revoked. It stops working with the next request." in page
    assert page.count("revoked. It stops working") == 1, "one message, naming the token"


# ---- API keys -----------------------------------------------------------------------------------
@SQLITE_ONLY
def test_create_shows_the_token_once(client: TestClient, world: World, clock: FrozenClock) -> None:
    csrf = as_dev(client)
    r = client.post(
        "/system-settings/api-keys",
        data={"name": "Zapier production", "scopes": ["users.read", "roles.read"], "expiry": "90", "csrf_token": csrf},
    )
    # Post/redirect/get: the secret is never in the redirect, and the page it lands on shows it once.
    assert r.status_code == 303 and r.headers["location"] == "/system-settings/api-keys"
    assert "kbai_pk_" not in r.headers["location"] and TOKEN_RE.search(r.text) is None
    r = client.get(r.headers["location"])
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    # Secrets stay out of test output: compare counts and booleans, never print a token.
    shown = TOKEN_RE.findall(r.text)
    times = len(shown)
    assert times == 1, "the token is on the page exactly once"
    assert "It will not be shown again" in r.text
    views = world.services.tokens.list(world.dev.user_id or 0)
    assert [(v.name, v.scopes, v.status) for v in views] == [
        ("Zapier production", ["users.read", "roles.read"], "active")
    ]
    assert views[0].expires_at == clock.now().replace(microsecond=0) + timedelta(days=90)
    authenticated = world.services.tokens.verify(shown[0]).authenticated
    assert authenticated
    listing = client.get("/system-settings/api-keys").text
    again = TOKEN_RE.search(listing) is not None
    assert not again, "the token never shows again"
    assert views[0].prefix in listing


@SQLITE_ONLY
def test_create_form_offers_only_held_permissions(client: TestClient, world: World) -> None:
    as_dev(client)
    html = client.get("/system-settings/api-keys").text
    offered = re.findall(r'name="scopes" value="([^"]+)"', html)
    # dev holds developer.manage_tokens too, but a token can never use it: it is not offered.
    assert offered == ["users.read", "roles.read"]
    assert 'name="expiry" value="90" checked' in html
    for example in ("Zapier production", "n8n nightly sync", "Local dev"):
        assert example in html
    assert "0 of 10 active tokens" in html


@SQLITE_ONLY
def test_create_errors_render_in_the_form(client: TestClient, world: World) -> None:
    csrf = as_dev(client)
    cases = [
        (
            {"name": "x", "scopes": ["users.manage"], "expiry": "90"},
            "You don&#39;t hold the &#39;users.manage&#39; permission",
            "scopes-error",
        ),
        (
            {"name": "x", "scopes": ["developer.manage_tokens"], "expiry": "90"},
            "needs an interactive session",
            "scopes-error",
        ),
        ({"name": "   ", "scopes": ["users.read"], "expiry": "90"}, "Give the token a name", "token-name-error"),
        ({"name": "x", "expiry": "90"}, "Pick at least one scope, or choose “Identity only”", "scopes-error"),
        (
            {"name": "x", "identity_only": "1", "expiry": "custom", "expires_on": ""},
            "Pick a date for the custom expiration",
            "expiry-error",
        ),
        (
            {"name": "x", "identity_only": "1", "expiry": "custom", "expires_on": "2020-01-01"},
            "after today",
            "expiry-error",
        ),
        ({"name": "x", "identity_only": "1", "expiry": "12"}, "Choose when the token expires.", "expiry-error"),
    ]
    for data, message, where in cases:
        r = client.post("/system-settings/api-keys", data={**data, "csrf_token": csrf})
        assert r.status_code == 422, data
        assert message in r.text, data
        # Under its field, which points at it and has the focus.
        assert re.search(rf'<p class="field-error" id="{where}" data-code="[a-z_]+" role="alert">', r.text), data
        assert re.search(r'aria-describedby="[^"]*\b' + where + '"', r.text), data
        assert r.text.count(" autofocus") - r.text.count('value="cancel" autofocus') == 1, data
    assert world.services.tokens.list(world.dev.user_id or 0) == []
    # The form keeps what was typed.
    r = client.post(
        "/system-settings/api-keys",
        data={"name": "Keep me", "scopes": ["roles.read"], "expiry": "custom", "expires_on": "", "csrf_token": csrf},
    )
    assert 'value="Keep me"' in r.text and 'value="roles.read" checked' in r.text
    assert 'value="custom" id="expiry-custom" checked' in r.text


@SQLITE_ONLY
def test_custom_date_and_no_expiration(client: TestClient, world: World) -> None:
    csrf = as_dev(client)
    for name, data in (("Custom", {"expiry": "custom", "expires_on": "2026-03-31"}), ("Forever", {"expiry": "never"})):
        r = client.post(
            "/system-settings/api-keys", data={"name": name, "identity_only": "1", "csrf_token": csrf, **data}
        )
        assert r.status_code == 303, r.text[:300]
    views = {v.name: v for v in world.services.tokens.list(world.dev.user_id or 0)}
    assert (
        views["Custom"].expires_at is not None and views["Custom"].expires_at.isoformat() == "2026-03-31T23:59:59+00:00"
    )
    assert views["Forever"].expires_at is None
    html = client.get("/system-settings/api-keys").text
    assert "Mar 31, 2026" in html and ">Never</td>" in html


@SQLITE_ONLY
def test_limit_message(client: TestClient, world: World) -> None:
    for i in range(10):
        world.services.tokens.create(world.dev, f"token {i}", [])
    csrf = as_dev(client)
    html = client.get("/system-settings/api-keys").text
    assert "10 of 10 active tokens" in html
    assert "Revoke one below before creating a new one" in html and "support@keebai.com" in html
    assert 'action="/system-settings/api-keys" ' not in html  # no create form
    r = client.post(
        "/system-settings/api-keys",
        data={"name": "eleven", "scopes": ["users.read"], "expiry": "never", "csrf_token": csrf},
    )
    assert r.status_code == 409
    assert alert(r.text) == errors.LIMIT_REACHED.template.format(active=10, limit=10, support="support@keebai.com")


def test_names_are_escaped_everywhere(client: TestClient, world: World) -> None:
    evil = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"
    csrf = as_dev(client)
    r = client.post(
        "/system-settings/api-keys", data={"name": evil, "identity_only": "1", "expiry": "7", "csrf_token": csrf}
    )
    assert r.status_code == 303
    for html in (client.get(r.headers["location"]).text, client.get("/system-settings/api-keys").text):
        assert "<script>alert" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    admin_csrf = login(client, "admin@acme.test", "admin-password-1")
    r = client.post("/system-settings/roles", data={"name": "<b>bold</b>", "csrf_token": admin_csrf})
    page = client.get(r.headers["location"]).text
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in client.get("/system-settings/roles").text


@SQLITE_ONLY
def test_scripts_and_styles_are_files_only(client: TestClient, world: World) -> None:
    as_admin(client)
    for path in PAGES:
        html = client.get(path).text
        assert re.search(r"<script(?![^>]*\bsrc=)", html) is None, path
        assert "<style" not in html and " style=" not in html and " on" + "click=" not in html, path
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/app.css").headers["content-type"].startswith("text/css")


# ---- no permission: Ask an admin ----------------------------------------------------------------
def test_no_permission_view_and_ask_an_admin(client: TestClient, world: World) -> None:
    svc = world.services
    member_id = make_member(world)
    csrf = login(client, "member@acme.test", "member-password-1")
    html = client.get("/system-settings/api-keys").text
    assert "You need the <code>developer.manage_tokens</code> permission to see and manage tokens." in html
    assert "It's a new permission that a tenant admin has to grant you" in html
    assert (
        "They go to System Settings → Roles, open your role, check Manage API Tokens under Developer, and save."
    ) in html
    assert ">Ask an admin</button>" in html
    assert 'name="scopes"' not in html
    # Posting the create form anyway is refused with the domain's message.
    r = client.post("/system-settings/api-keys", data={"name": "x", "expiry": "never", "csrf_token": csrf})
    assert r.status_code == 403 and "developer.manage_tokens" in alert(r.text)

    for _ in range(2):  # asking twice records one request
        r = client.post("/system-settings/api-keys/ask-admin", data={"note": "<i>Zapier</i>", "csrf_token": csrf})
        assert r.status_code == 303
    html = client.get(r.headers["location"]).text
    assert "Request sent." in html and "You asked on" in html and ">Ask an admin</button>" not in html
    with svc.db.read() as s:
        rows = s.scalars(select(AdminRequest)).all()
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "admin_request.create")).all()
    assert [(r.user_id, r.permission, r.message) for r in rows] == [
        (member_id, "developer.manage_tokens", "<i>Zapier</i>")
    ]
    assert len(events) == 1 and events[0].tenant_id == world.tenant_id

    # The admins see it on Roles and Users (escaped), and in the navigation.
    admin_csrf = as_admin(client)
    for path in ("/system-settings/roles", "/system-settings/users"):
        page = client.get(path).text
        assert "Requests from your team" in page and "member@acme.test" in page
        assert "&lt;i&gt;Zapier&lt;/i&gt;" in page and "<i>Zapier</i>" not in page
    assert "1 request from your team is waiting" in client.get("/system-settings").text
    # The member has only the Member role: granting on it gives everyone with Member the permission.
    member_role = svc.access.list_roles(world.admin, world.tenant_id)[1]
    request_id = rows[0].id
    r = client.post(
        f"/system-settings/requests/{request_id}/grant", data={"role_id": str(member_role.id), "csrf_token": admin_csrf}
    )
    assert r.status_code == 303 and r.headers["location"] == f"/system-settings/roles/{member_role.id}?done=granted"
    assert "developer.manage_tokens" in svc.access.get_role(world.admin, member_role.id).permissions
    assert "Requests from your team" not in client.get("/system-settings/roles").text

    login(client, "member@acme.test", "member-password-1")
    html = client.get("/system-settings/api-keys").text
    assert "Create a token" in html and "Unlock developer mode" not in html


@SQLITE_ONLY
def test_grant_only_on_the_requesters_roles_and_only_by_role_managers(client: TestClient, world: World) -> None:
    svc = world.services
    make_member(world)
    csrf = login(client, "member@acme.test", "member-password-1")
    client.post("/system-settings/api-keys/ask-admin", data={"csrf_token": csrf})
    with svc.db.read() as s:
        request_id = s.scalars(select(AdminRequest.id)).one()
    # dev has roles.read and users.read but not roles.manage: sees the request, can't grant.
    dev_csrf = as_dev(client)
    page = client.get("/system-settings/roles").text
    assert "member@acme.test" in page and ">Grant</button>" not in page
    r = client.post(
        f"/system-settings/requests/{request_id}/grant",
        data={"role_id": str(world.dev_role_id), "csrf_token": dev_csrf},
    )
    assert r.status_code in (403, 404)
    admin_csrf = as_admin(client)
    r = client.post(
        f"/system-settings/requests/{request_id}/grant",
        data={"role_id": str(world.dev_role_id), "csrf_token": admin_csrf},
    )
    assert r.status_code == 404  # Developers is not one of the member's roles
    r = client.post(f"/system-settings/requests/{request_id}/dismiss", data={"csrf_token": admin_csrf})
    assert r.status_code == 303
    assert "Requests from your team" not in client.get("/system-settings/roles").text


# ---- roles --------------------------------------------------------------------------------------
@SQLITE_ONLY
def test_role_page_groups_permissions_and_saves(client: TestClient, world: World) -> None:
    csrf = as_admin(client)
    html = client.get(f"/system-settings/roles/{world.dev_role_id}").text
    developer = html[html.index("<legend>Developer</legend>") : html.index("<legend>Users</legend>")]
    assert "Manage API Tokens" in developer and 'value="developer.manage_tokens" checked' in developer
    r = client.post(
        f"/system-settings/roles/{world.dev_role_id}",
        data={"permissions": ["users.read", "audit.read"], "csrf_token": csrf},
    )
    assert r.status_code == 303 and r.headers["location"].endswith("?done=saved")
    assert world.services.access.get_role(world.admin, world.dev_role_id).permissions == ["users.read", "audit.read"]
    assert "Saved." in client.get(r.headers["location"]).text
    r = client.post(
        f"/system-settings/roles/{world.dev_role_id}", data={"permissions": ["nope.nope"], "csrf_token": csrf}
    )
    assert r.status_code == 422 and "Unknown permission" in alert(r.text)


@SQLITE_ONLY
def test_admin_role_is_shown_checked_and_fixed(client: TestClient, world: World) -> None:
    as_admin(client)
    admin_role = world.services.access.list_roles(world.admin, world.tenant_id)[0]
    html = client.get(f"/system-settings/roles/{admin_role.id}").text
    boxes = re.findall(r'<input type="checkbox" name="permissions"[^>]*>', html)
    assert len(boxes) == 8 and all(" checked" in b and " disabled" in b for b in boxes)
    assert ">Save</button>" not in html


@SQLITE_ONLY
def test_only_role_managers_can_edit_roles(client: TestClient, world: World) -> None:
    csrf = as_dev(client)  # roles.read, not roles.manage
    html = client.get(f"/system-settings/roles/{world.dev_role_id}").text
    assert ">Save</button>" not in html and "needs the roles.manage permission" in html
    assert all(" disabled" in b for b in re.findall(r'<input type="checkbox" name="permissions"[^>]*>', html))
    r = client.post(f"/system-settings/roles/{world.dev_role_id}", data={"permissions": [], "csrf_token": csrf})
    assert r.status_code == 403 and "You need the roles.manage permission" in r.text
    assert world.services.access.get_role(world.admin, world.dev_role_id).permissions != []
    r = client.post("/system-settings/roles", data={"name": "Mine", "csrf_token": csrf})
    assert r.status_code == 403


# ---- users --------------------------------------------------------------------------------------
def test_last_admin_is_refused_with_a_clear_message(client: TestClient, world: World) -> None:
    csrf = as_admin(client)
    admin_id = world.admin.user_id
    member_role = world.services.access.list_roles(world.admin, world.tenant_id)[1]
    r = client.post(
        f"/system-settings/users/{admin_id}/roles", data={"roles": [str(member_role.id)], "csrf_token": csrf}
    )
    assert r.status_code == 409
    assert alert(r.text) == errors.LAST_ADMIN.template
    r = client.post(f"/system-settings/users/{admin_id}/deactivate", data={"csrf_token": csrf})
    assert r.status_code == 409
    assert alert(r.text) == errors.LAST_ADMIN.template
    assert world.services.access.get_user(world.admin, admin_id or 0).roles == ["Admin"]
    assert client.get("/system-settings").status_code == 200  # still logged in, still admin


@SQLITE_ONLY
def test_users_create_assign_deactivate(client: TestClient, world: World) -> None:
    svc = world.services
    csrf = as_admin(client)
    r = client.post(
        "/system-settings/users", data={"email": "Pat@Acme.test", "roles": [str(world.dev_role_id)], "csrf_token": csrf}
    )
    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    found = re.search(r'id="invitation-url" class="secret-value">([^<]+)<', r.text)
    assert found is not None, "the invitation link is shown"
    assert "will not be shown again" in r.text and "Their password was generated" not in r.text
    pat = svc.access.user_by_email("pat@acme.test")
    assert pat is not None
    assert svc.access.get_user(world.admin, pat.id).roles == ["Developers"]
    secret = found.group(1).rsplit("/", 1)[1]
    assert svc.access.invitation(secret).sets_password  # a new person: they choose their password there
    assert 'id="invitation-url"' not in client.get("/system-settings/users").text

    r = client.post("/system-settings/users", data={"email": "pat@acme.test", "csrf_token": csrf})
    assert r.status_code == 409 and "pat@acme.test is already a member of this tenant" in alert(r.text)
    assert 'value="pat@acme.test"' in r.text and 'aria-invalid="true" aria-describedby="user-email-error"' in r.text

    admin_role = svc.access.list_roles(world.admin, world.tenant_id)[0]
    r = client.post(
        f"/system-settings/users/{pat.id}/roles",
        data={"roles": [str(admin_role.id), str(world.dev_role_id)], "csrf_token": csrf},
    )
    assert r.status_code == 303
    assert svc.access.get_user(world.admin, pat.id).roles == ["Admin", "Developers"]

    token, _ = svc.tokens.create(world.actor("pat@acme.test"), "Pat's script", [])
    r = client.post(f"/system-settings/users/{pat.id}/deactivate", data={"csrf_token": csrf})
    assert r.status_code == 303
    assert svc.access.get_user(world.admin, pat.id).active is False
    html = client.get(r.headers["location"]).text
    assert "User deactivated." in html and "Deactivated" in html
    # The token is not revoked, but its owner is gone, so it stops working.
    assert svc.tokens.get(Actor.operator(), token.id).status == "active"
    with svc.db.read() as s:
        digest = s.get(Token, token.id).digest  # type: ignore[union-attr]
    record = svc.tokens.load_record(digest)
    assert record is not None and record.owner_active is False
