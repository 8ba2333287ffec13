"""Issue 13, findings 1, 4 and 5, reproduced through HTTP as the review did them, on both backends.

1. Whoever manages users or roles could make themselves a full Admin (set roles, create or change a role).
4. A token with users.manage could create a password login that outlived the token.
5. A users.manage holder could deactivate admins, and nobody could reactivate anyone.

Then the JSON API and the pages' HTML forms are probed for a representative subset of the permission
combinations that tests/access/test_privileges.py sweeps exhaustively at the service level.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kbai.access.catalog import BUILTIN
from kbai.services import Services
from kbai.store.models import Token
from tests.conftest import OPERATOR, World
from tests.web.conftest import accept_invitation, login
from tests.web.safety import changed_tables, error_problems, page_problems, shown, shown_page, snapshot

KEYS = [p.key for p in BUILTIN]
H = "/system-settings"


def _client(app_client: TestClient) -> TestClient:
    """Another browser on the same app (its own cookie jar)."""
    return TestClient(app_client.app, raise_server_exceptions=False, follow_redirects=False)


def _as(client: TestClient, email: str, password: str) -> dict[str, str]:
    client.cookies.clear()
    return {"X-CSRF-Token": login(client, email, password)}


def _scopes(client: TestClient, headers: dict[str, str] | None = None) -> list[str]:
    r = client.get("/api/v1/me", headers=headers or {})
    assert r.status_code == 200, shown(r)
    return list(r.json()["scopes"])


def _admin_sets_up(client: TestClient, roles: dict[str, list[str]], users: dict[str, list[str]]) -> dict[str, int]:
    """The admin creates ``roles`` and ``users`` (email -> role names, password "<local part>-password-1")."""
    h = _as(client, "admin@acme.test", "admin-password-1")
    ids: dict[str, int] = {}
    for name, perms in roles.items():
        r = client.post("/api/v1/roles", json={"name": name, "permissions": perms}, headers=h)
        assert r.status_code == 201, shown(r)
        ids[name] = r.json()["id"]
    for email, role_names in users.items():
        password = email.split("@")[0] + "-password-1"
        r = client.post("/api/v1/users", json={"email": email, "roles": role_names}, headers=h)
        assert r.status_code == 201, shown(r)
        ids[email] = r.json()["id"]
        accept_invitation(client, r.json()["invitation_url"], password)
    return ids


# ---- finding 1 ------------------------------------------------------------------------------------
def test_finding1_helpdesk_cannot_give_itself_security_or_admin(world: World, app_client: TestClient) -> None:
    """The issue's first path: PUT /users/{self}/roles with Helpdesk + Security, then + Admin: both 403."""
    ids = _admin_sets_up(
        app_client,
        {"Helpdesk": ["users.read", "users.manage"], "Security": ["roles.read", "roles.manage", "audit.read"]},
        {"helpdesk@acme.test": ["Helpdesk"]},
    )
    h = _as(app_client, "helpdesk@acme.test", "helpdesk-password-1")
    me = ids["helpdesk@acme.test"]
    before = snapshot(world.services.db)
    for roles in (["Helpdesk", "Security"], ["Helpdesk", "Security", "Admin"], ["Helpdesk", "Admin"]):
        r = app_client.put(f"/api/v1/users/{me}/roles", json={"roles": roles}, headers=h)
        assert not error_problems(r, 403, "permission_not_held", "which you don't hold yourself"), shown(r)
    r = app_client.post("/api/v1/users", json={"email": "second.me@acme.test", "roles": ["Security"]}, headers=h)
    assert not error_problems(r, 403, "permission_not_held", "Security role"), shown(r)
    assert changed_tables(before, snapshot(world.services.db)) == []
    assert _scopes(app_client) == ["users.read", "users.manage"]


def test_finding1_roles_manage_cannot_fill_its_own_role_and_take_admin(world: World, app_client: TestClient) -> None:
    """The issue's second path: [roles.read, roles.manage] puts every permission on its own role: 403."""
    ids = _admin_sets_up(
        app_client, {"RoleKeepers": ["roles.read", "roles.manage"]}, {"keeper@acme.test": ["RoleKeepers"]}
    )
    h = _as(app_client, "keeper@acme.test", "keeper-password-1")
    before = snapshot(world.services.db)
    r = app_client.put(f"/api/v1/roles/{ids['RoleKeepers']}", json={"permissions": KEYS}, headers=h)
    assert not error_problems(r, 403, "permission_not_held", "you don't hold them yourself"), shown(r)
    r = app_client.post("/api/v1/roles", json={"name": "Everything", "permissions": KEYS}, headers=h)
    assert not error_problems(r, 403, "permission_not_held"), shown(r)
    r = app_client.put(f"/api/v1/users/{ids['keeper@acme.test']}/roles", json={"roles": ["Admin"]}, headers=h)
    assert not error_problems(r, 403, "forbidden", "users.manage"), shown(r)
    assert changed_tables(before, snapshot(world.services.db)) == []
    assert _scopes(app_client) == ["roles.read", "roles.manage"]
    role = app_client.get(f"/api/v1/roles/{ids['RoleKeepers']}").json()
    assert role["permissions"] == ["roles.read", "roles.manage"]


# ---- finding 4 ------------------------------------------------------------------------------------
def _legacy_token(svc: Services, world: World, scopes: list[str]) -> str:
    """A token of the admin carrying ``scopes``. users.manage and roles.manage are session-only and not
    accepted as scopes any more, but tokens minted before may hold them: written to the row directly."""
    view, plaintext = svc.tokens.create(world.admin, "legacy integration", ["users.read"])
    with svc.db.write() as s:
        row = s.get(Token, view.id)
        assert row is not None
        row.scopes = scopes
    svc.cache.clear()
    return plaintext


def test_finding4_a_token_with_users_manage_cannot_create_a_login(world: World, app_client: TestClient) -> None:
    """POST /api/v1/users with the token as Bearer was 201, and the login survived revoking the token."""
    svc = world.services
    plaintext = _legacy_token(svc, world, [k for k in KEYS if k != "developer.manage_tokens"])
    bearer = {"Authorization": f"Bearer {plaintext}"}
    app_client.cookies.clear()
    admin2, _ = svc.access.create_user(OPERATOR, world.tenant_id, "admin2@acme.test", "admin2-password", ["Admin"])
    svc.access.deactivate_user(OPERATOR, admin2.id)
    before = snapshot(svc.db)
    attempts: list[tuple[str, str, Any]] = [
        (
            "POST",
            "/api/v1/users",
            {"email": "backdoor@acme.test", "password": "backdoor-password-1", "roles": ["Member"]},
        ),
        ("POST", "/api/v1/users", {"email": "backdoor@acme.test"}),
        ("PUT", f"/api/v1/users/{world.dev.user_id}/roles", {"roles": ["Admin"]}),
        ("POST", f"/api/v1/users/{world.dev.user_id}/deactivate", None),
        ("POST", f"/api/v1/users/{admin2.id}/reactivate", None),
        ("POST", "/api/v1/roles", {"name": "Backdoor", "permissions": []}),
        ("PUT", f"/api/v1/roles/{world.dev_role_id}", {"permissions": KEYS}),
    ]
    for method, path, body in attempts:
        r = app_client.request(method, path, json=body, headers=bearer)
        assert not error_problems(r, 403, "session_required", "An API token cannot"), f"{method} {path}: {shown(r)}"
        assert "password" not in r.json()
    assert changed_tables(before, snapshot(svc.db)) == []
    # Reading stays what tokens are for.
    assert app_client.get("/api/v1/users", headers=bearer).status_code == 200
    assert app_client.get("/api/v1/roles", headers=bearer).status_code == 200
    # The rest of the repro: revoke the token; there is no backdoor login to fall back on.
    token_id = app_client.get("/api/v1/me", headers=bearer).json()["token_id"]
    assert app_client.post(f"/api/v1/tokens/{token_id}/revoke", headers=bearer).status_code == 200
    r = app_client.post("/api/v1/session", json={"email": "backdoor@acme.test", "password": "backdoor-password-1"})
    assert r.status_code == 401
    assert svc.access.user_by_email("backdoor@acme.test") is None


def test_finding4_the_same_changes_with_a_session_still_work(world: World, app_client: TestClient) -> None:
    """The refusal is about the token, not the change: the admin's session does all of it."""
    h = _as(app_client, "admin@acme.test", "admin-password-1")
    r = app_client.post("/api/v1/users", json={"email": "newhire@acme.test"}, headers=h)
    assert r.status_code == 201 and "password" not in r.json() and r.json()["invitation_url"], shown(r)
    new = r.json()["id"]
    assert app_client.put(f"/api/v1/users/{new}/roles", json={"roles": ["Developers"]}, headers=h).status_code == 200
    assert app_client.post(f"/api/v1/users/{new}/deactivate", headers=h).json()["active"] is False
    assert app_client.post(f"/api/v1/users/{new}/reactivate", headers=h).json()["active"] is True
    assert app_client.post("/api/v1/roles", json={"name": "Ops", "permissions": KEYS}, headers=h).status_code == 201


# ---- finding 5 ------------------------------------------------------------------------------------
def test_finding5_users_manage_cannot_deactivate_an_admin(world: World, app_client: TestClient) -> None:
    """Two admins, so the last-admin rule doesn't save them: a Helpdesk POST .../deactivate was 200."""
    ids = _admin_sets_up(
        app_client,
        {"Helpdesk": ["users.read", "users.manage"]},
        {"helpdesk@acme.test": ["Helpdesk"], "admin2@acme.test": ["Admin"]},
    )
    h = _as(app_client, "helpdesk@acme.test", "helpdesk-password-1")
    before = snapshot(world.services.db)
    for target in (ids["admin2@acme.test"], world.admin.user_id, world.dev.user_id):
        r = app_client.post(f"/api/v1/users/{target}/deactivate", headers=h)
        assert not error_problems(r, 403, "permission_not_held", "they hold"), shown(r)
    assert changed_tables(before, snapshot(world.services.db)) == []
    other = _client(app_client)
    assert (
        other.post("/api/v1/session", json={"email": "admin2@acme.test", "password": "admin2-password-1"}).status_code
        == 200
    )


def test_finding5_reactivation_brings_back_the_login_but_never_a_revoked_token(
    world: World, app_client: TestClient
) -> None:
    svc = world.services
    dev = _client(app_client)
    dh = _as(dev, "dev@acme.test", "dev-password-1")
    kept = dev.post("/api/v1/tokens", json={"name": "kept", "scopes": ["users.read"]}, headers=dh).json()
    gone = dev.post("/api/v1/tokens", json={"name": "gone", "scopes": ["users.read"]}, headers=dh).json()
    assert dev.post(f"/api/v1/tokens/{gone['id']}/revoke", headers=dh).status_code == 200
    h = _as(app_client, "admin@acme.test", "admin-password-1")
    r = app_client.post(f"/api/v1/users/{world.dev.user_id}/deactivate", headers=h)
    assert r.status_code == 200 and r.json()["active"] is False
    anon = _client(app_client)
    r = anon.get("/api/v1/me", headers={"Authorization": f"Bearer {kept['token']}"})  # also warms the cache
    assert r.status_code == 401 and "deactivated" in r.json()["error"]["message"]
    # Re-creating the address is no way back ...
    r = app_client.post("/api/v1/users", json={"email": "dev@acme.test"}, headers=h)
    assert r.status_code == 409
    # ... reactivating is.
    r = app_client.post(f"/api/v1/users/{world.dev.user_id}/reactivate", headers=h)
    assert r.status_code == 200, shown(r)
    assert r.json() == {
        "id": world.dev.user_id,
        "email": "dev@acme.test",
        "roles": ["Developers"],
        "active": True,
        "external_id": None,
    }
    r = anon.get("/api/v1/me", headers={"Authorization": f"Bearer {kept['token']}"})
    assert r.status_code == 200 and r.json()["token_id"] == kept["id"], shown(r)
    r = anon.get("/api/v1/me", headers={"Authorization": f"Bearer {gone['token']}"})
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    assert svc.tokens.get(OPERATOR, gone["id"]).status == "revoked"
    assert dev.get("/api/v1/me").status_code == 401  # the old session stays ended
    _as(dev, "dev@acme.test", "dev-password-1")
    assert "developer.manage_tokens" in _scopes(dev)
    events = app_client.get("/api/v1/audit", params={"action": "user.reactivate"}).json()["events"]
    assert len(events) == 1 and events[0]["actor"] == "user:admin@acme.test" and events[0]["ip"]
    assert events[0]["target_id"] == str(world.dev.user_id) and events[0]["details"] == {"email": "dev@acme.test"}


def test_finding5_only_someone_who_holds_all_they_hold_reactivates(world: World, app_client: TestClient) -> None:
    ids = _admin_sets_up(
        app_client,
        {"Helpdesk": ["users.read", "users.manage"]},
        {"helpdesk@acme.test": ["Helpdesk"], "admin2@acme.test": ["Admin"], "temp@acme.test": ["Member"]},
    )
    h = _as(app_client, "admin@acme.test", "admin-password-1")
    for email in ("admin2@acme.test", "temp@acme.test"):
        assert app_client.post(f"/api/v1/users/{ids[email]}/deactivate", headers=h).status_code == 200
    h = _as(app_client, "helpdesk@acme.test", "helpdesk-password-1")
    before = snapshot(world.services.db)
    r = app_client.post(f"/api/v1/users/{ids['admin2@acme.test']}/reactivate", headers=h)
    assert not error_problems(r, 403, "permission_not_held", "You can't reactivate admin2@acme.test"), shown(r)
    assert changed_tables(before, snapshot(world.services.db)) == []
    r = app_client.post(f"/api/v1/users/{ids['temp@acme.test']}/reactivate", headers=h)
    assert r.status_code == 200 and r.json()["active"] is True


# ---- a representative subset of the combinations, over the API and through the forms ---------------
REPRESENTATIVE = [
    ("helpdesk", ["users.read", "users.manage"]),
    ("security", ["roles.read", "roles.manage", "audit.read"]),
    ("managers-only", ["users.manage", "roles.manage"]),
    ("managers-and-readers", ["users.read", "users.manage", "roles.read", "roles.manage"]),
    ("all-but-audit", [k for k in KEYS if k != "audit.read"]),
    ("all-but-review", [k for k in KEYS if k != "developer.review_tokens"]),
]


@pytest.fixture
def probe_world(world: World, app_client: TestClient) -> Iterator[tuple[World, TestClient, dict[str, int]]]:
    """Per missing permission a role holding only it and a user holding that role; an active and a deactivated
    second admin; an "Ask an admin" request of a Member for each permission."""
    from kbai.access.requests import AdminRequests

    svc = world.services
    ids: dict[str, int] = {}
    for key in KEYS:
        ids[f"only {key}"] = svc.access.create_role(OPERATOR, world.tenant_id, f"Only {key}", [key]).id
        ids[f"has {key}"] = svc.access.create_user(
            OPERATOR, world.tenant_id, f"has.{key}@acme.test", "holder-password-1", [ids[f"only {key}"]]
        )[0].id
    ids["admin2"] = svc.access.create_user(OPERATOR, world.tenant_id, "admin2@acme.test", "admin2-password", ["Admin"])[
        0
    ].id
    ids["gone"] = svc.access.create_user(OPERATOR, world.tenant_id, "gone@acme.test", "gone-password-1", ["Admin"])[
        0
    ].id
    svc.access.deactivate_user(OPERATOR, ids["gone"])
    svc.access.create_user(OPERATOR, world.tenant_id, "asker@acme.test", "asker-password-1", ["Member"])
    asker = world.actor("asker@acme.test")
    for key in KEYS:
        AdminRequests(svc.access).ask(asker, key)
    for r in AdminRequests(svc.access).pending(world.admin):
        ids[f"request {r.permission}"] = r.id
    ids["member role"] = next(r.id for r in svc.access.list_roles(OPERATOR, world.tenant_id) if r.name == "Member")
    yield world, app_client, ids


def _api_attempts(ids: dict[str, int], own_role: int, me: int, held: list[str], p: str) -> list[tuple[str, str, Any]]:
    return [
        ("POST", "/api/v1/roles", {"name": f"Gain {p}", "permissions": [*held, p]}),
        ("PUT", f"/api/v1/roles/{own_role}", {"permissions": [*held, p]}),
        ("PUT", f"/api/v1/roles/{ids['only ' + p]}", {"permissions": []}),
        ("PUT", f"/api/v1/users/{me}/roles", {"roles": [own_role, ids["only " + p]]}),
        ("PUT", f"/api/v1/users/{me}/roles", {"roles": ["Admin"]}),
        ("PUT", f"/api/v1/users/{ids['has ' + p]}/roles", {"roles": ["Member"]}),
        ("POST", "/api/v1/users", {"email": f"gain.{p}@acme.test", "roles": [ids["only " + p]]}),
        ("POST", f"/api/v1/users/{ids['has ' + p]}/deactivate", None),
        ("POST", f"/api/v1/users/{ids['admin2']}/deactivate", None),
        ("POST", f"/api/v1/users/{ids['gone']}/reactivate", None),
    ]


def _form_attempts(ids: dict[str, int], own_role: int, me: int, held: list[str], p: str) -> list[tuple[str, Any]]:
    return [
        (f"{H}/roles/{own_role}", {"permissions": [*held, p]}),
        (f"{H}/roles/{ids['only ' + p]}", {}),
        (f"{H}/users/{me}/roles", {"roles": [str(own_role), str(ids["only " + p])]}),
        (f"{H}/users/{ids['has ' + p]}/roles", {"roles": [str(ids["member role"])]}),
        (f"{H}/users", {"email": f"gain.{p}@acme.test", "roles": [str(ids["only " + p])]}),
        (f"{H}/users/{ids['has ' + p]}/deactivate", {}),
        (f"{H}/users/{ids['admin2']}/deactivate", {}),
        (f"{H}/users/{ids['gone']}/reactivate", {}),
        (f"{H}/requests/{ids['request ' + p]}/grant", {"role_id": str(ids["member role"])}),
    ]


def _code(path: str, held: list[str]) -> str:
    """permission_not_held where the caller may try at all; forbidden where they lack the gate itself."""
    if "/requests/" in path:
        gate = {"roles.read", "roles.manage"}  # granting a request reads the role, then changes it
    elif "/users" in path:
        gate = {"users.manage"}
    else:
        gate = {"roles.manage"}
    return "permission_not_held" if gate <= set(held) else "forbidden"


@pytest.mark.parametrize("backend", ["sqlite"])  # routes and forms; the storage rules run on both backends above
@pytest.mark.parametrize(("label", "held"), REPRESENTATIVE, ids=[label for label, _ in REPRESENTATIVE])
def test_no_api_call_or_form_gains_a_permission_not_held(
    probe_world: tuple[World, TestClient, dict[str, int]], label: str, held: list[str]
) -> None:
    world, app_client, ids = probe_world
    svc = world.services
    own = svc.access.create_role(OPERATOR, world.tenant_id, f"Combo {label}", held)
    me, _ = svc.access.create_user(OPERATOR, world.tenant_id, "prober@acme.test", "prober-password-1", [own.id])
    h = _as(app_client, "prober@acme.test", "prober-password-1")
    missing = [k for k in KEYS if k not in held]
    problems: list[str] = []
    before = snapshot(svc.db)
    for p in missing:
        for method, path, body in _api_attempts(ids, own.id, me.id, held, p):
            r = app_client.request(method, path, json=body, headers=h)
            found = error_problems(r, 403, _code(path, held))
            if found:
                problems.append(f"API {method} {path} ({p}): {found} {shown(r)}")
        for path, fields in _form_attempts(ids, own.id, me.id, held, p):
            r = app_client.post(path, data={**fields, "csrf_token": h["X-CSRF-Token"]})
            found = page_problems(r, 403, _code(path, held))
            if found:
                problems.append(f"form {path} ({p}): {found} {shown_page(r)}")
    changed = changed_tables(before, snapshot(svc.db))
    assert not problems, "\n".join(problems[:20])
    assert changed == [], f"refused attempts changed {changed}"
    assert _scopes(app_client) == [k for k in KEYS if k in held]


# ---- the pages offer only what you may do ---------------------------------------------------------
def test_the_users_page_offers_only_roles_you_hold_and_people_within_reach(
    world: World, app_client: TestClient
) -> None:
    ids = _admin_sets_up(
        app_client,
        {"Helpdesk": ["users.read", "users.manage"]},
        {"helpdesk@acme.test": ["Helpdesk"], "temp@acme.test": ["Member"]},
    )
    h = _as(app_client, "admin@acme.test", "admin-password-1")
    app_client.post(f"/api/v1/users/{ids['temp@acme.test']}/deactivate", headers=h)
    admin_page = app_client.get(f"{H}/users").text
    assert f'action="{H}/users/{ids["temp@acme.test"]}/reactivate"' in admin_page
    assert f'action="{H}/users/{world.dev.user_id}/deactivate"' in admin_page
    _as(app_client, "helpdesk@acme.test", "helpdesk-password-1")
    page = app_client.get(f"{H}/users").text
    assert f'action="{H}/users/{ids["temp@acme.test"]}/reactivate"' in page  # a Member: within reach
    assert f'action="{H}/users/{world.dev.user_id}/deactivate"' not in page  # Developers hold more
    assert f'action="{H}/users/{world.admin.user_id}/roles"' not in page
    assert "only an admin can change this user" in page
    # Handing out a role that grants what Helpdesk lacks is not offered.
    roles = {r.name: r.id for r in world.services.access.list_roles(OPERATOR, world.tenant_id)}
    assert f'value="{roles["Admin"]}" disabled' in page and f'value="{roles["Developers"]}" disabled' in page
    assert f'value="{roles["Helpdesk"]}" disabled' not in page


def test_the_role_page_locks_the_permissions_you_do_not_hold(world: World, app_client: TestClient) -> None:
    ids = _admin_sets_up(
        app_client,
        {"RoleKeepers": ["roles.read", "roles.manage"], "Auditors": ["audit.read", "roles.read"]},
        {"keeper@acme.test": ["RoleKeepers"]},
    )
    h = _as(app_client, "keeper@acme.test", "keeper-password-1")
    page = app_client.get(f"{H}/roles/{ids['Auditors']}").text
    assert 'value="audit.read" checked disabled' in page
    assert '<input type="hidden" name="permissions" value="audit.read">' in page
    assert 'value="roles.read" checked>' in page and 'value="users.manage" disabled' in page
    # Saving the form as shown (roles.read unticked) keeps audit.read and takes off only roles.read.
    r = app_client.post(
        f"{H}/roles/{ids['Auditors']}",
        data={"permissions": ["audit.read"], "csrf_token": h["X-CSRF-Token"]},
        follow_redirects=False,
    )
    assert r.status_code == 303, shown_page(r)
    assert world.services.access.get_role(OPERATOR, ids["Auditors"]).permissions == ["audit.read"]


def test_a_request_for_a_permission_you_do_not_hold_offers_no_grant(world: World, app_client: TestClient) -> None:
    from kbai.access.requests import AdminRequests

    _admin_sets_up(
        app_client,
        {"RoleKeepers": ["roles.read", "roles.manage", "users.read"]},
        {"keeper@acme.test": ["RoleKeepers"], "asker@acme.test": ["Member"]},
    )
    asker = world.actor("asker@acme.test")
    AdminRequests(world.services.access).ask(asker, "audit.read")
    AdminRequests(world.services.access).ask(asker, "users.read")
    _as(app_client, "keeper@acme.test", "keeper-password-1")
    page = app_client.get(f"{H}/roles").text
    assert "Only someone who holds audit.read can grant it." in page
    assert page.count('/grant"') == 1  # users.read: the keeper holds it, so may grant it


def test_the_reactivate_button_works(world: World, app_client: TestClient) -> None:
    h = _as(app_client, "admin@acme.test", "admin-password-1")
    app_client.post(f"/api/v1/users/{world.dev.user_id}/deactivate", headers=h)
    r = app_client.post(
        f"{H}/users/{world.dev.user_id}/reactivate", data={"csrf_token": h["X-CSRF-Token"]}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == f"{H}/users?done=reactivated"
    assert "User reactivated." in app_client.get(r.headers["location"]).text
    assert world.services.access.get_user(OPERATOR, world.dev.user_id).active  # type: ignore[arg-type]
    r = app_client.post(f"{H}/users/{world.dev.user_id}/reactivate", data={"csrf_token": "wrong"})
    assert r.status_code == 403
