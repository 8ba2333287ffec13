"""The JSON API in-process, on both backends: envelopes, sessions, CSRF, permissions, isolation."""

from __future__ import annotations

import os
import re
from typing import Any

from fastapi.testclient import TestClient

from kbai.clock import FrozenClock
from tests.conftest import OPERATOR, World, build_world
from tests.web.conftest import login


def _create(client: TestClient, csrf: str, name: str = "Zapier production", **extra: Any) -> dict[str, Any]:
    body = {"name": name, "scopes": ["users.read"], "expires_in_days": 90, **extra}
    r = client.post("/api/v1/tokens", json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_login_with_wrong_password_is_401_with_envelope(world: World, app_client: TestClient) -> None:
    r = app_client.post("/api/v1/session", json={"email": "dev@acme.test", "password": "wrong-password"})
    assert r.status_code == 401
    assert r.json() == {"error": {"code": "invalid_credentials", "message": "Wrong email or password."}}
    assert "kbai_session" not in r.cookies


def test_session_cookie_is_httponly_and_samesite(world: World, app_client: TestClient) -> None:
    r = app_client.post("/api/v1/session", json={"email": "dev@acme.test", "password": "dev-password-1"})
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie


def test_each_login_gets_a_new_session_id(world: World, app_client: TestClient) -> None:
    login(app_client, "dev@acme.test", "dev-password-1")
    first = app_client.cookies.get("kbai_session")
    login(app_client, "dev@acme.test", "dev-password-1")
    assert app_client.cookies.get("kbai_session") != first


def test_create_needs_csrf_header(dev_client: tuple[TestClient, str]) -> None:
    client, _csrf = dev_client
    r = client.post("/api/v1/tokens", json={"name": "x", "scopes": []})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "csrf_failed"
    r = client.post("/api/v1/tokens", json={"name": "x", "scopes": []}, headers={"X-CSRF-Token": "wrong"})
    assert r.status_code == 403
    assert client.get("/api/v1/tokens").json()["tokens"] == []


def test_create_list_and_revoke(dev_client: tuple[TestClient, str]) -> None:
    client, csrf = dev_client
    created = _create(client, csrf)
    assert created["token"].startswith(created["prefix"]) and len(created["prefix"]) == 12
    listed = client.get("/api/v1/tokens").json()
    assert listed["next_cursor"] is None
    (row,) = listed["tokens"]
    assert "token" not in row
    assert set(row) == {
        "id",
        "name",
        "prefix",
        "scopes",
        "created_at",
        "last_used_at",
        "expires_at",
        "status",
        "rotated_from_id",
        "rotated_to_id",
        "hygiene",
        "description",
        "allowed_ips",
        "self_rotate",
        "paused_at",
        "service",
        "created_by",
        "rate_limit",
        "quota",
    }
    assert (row["service"], row["created_by"]) == (False, None)
    assert row["status"] == "active" and row["last_used_at"] is None and row["expires_at"].endswith("Z")
    r = client.post(f"/api/v1/tokens/{created['id']}/revoke", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    again = client.post(f"/api/v1/tokens/{created['id']}/revoke", headers={"X-CSRF-Token": csrf})
    assert again.status_code == 200 and again.json() == r.json()


def test_token_list_paginates_with_cursor(dev_client: tuple[TestClient, str]) -> None:
    client, csrf = dev_client
    ids = [_create(client, csrf, name=f"t{i}")["id"] for i in range(5)]
    page1 = client.get("/api/v1/tokens", params={"limit": 2}).json()
    page2 = client.get("/api/v1/tokens", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
    page3 = client.get("/api/v1/tokens", params={"limit": 2, "cursor": page2["next_cursor"]}).json()
    seen = [t["id"] for p in (page1, page2, page3) for t in p["tokens"]]
    assert seen == sorted(ids, reverse=True)
    assert page3["next_cursor"] is None
    assert client.get("/api/v1/tokens", params={"cursor": "abc"}).status_code == 422


def test_token_can_revoke_itself_but_not_a_sibling(dev_client: tuple[TestClient, str]) -> None:
    client, csrf = dev_client
    a = _create(client, csrf, name="a")
    b = _create(client, csrf, name="b")
    r = client.post(f"/api/v1/tokens/{b['id']}/revoke", headers=_bearer(a["token"]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "session_required"
    r = client.post(f"/api/v1/tokens/{a['id']}/revoke", headers=_bearer(a["token"]))
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    assert client.get("/api/v1/me", headers=_bearer(a["token"])).status_code == 401
    assert client.get("/api/v1/me", headers=_bearer(b["token"])).status_code == 200


def test_tokens_cannot_list_create_or_rotate(dev_client: tuple[TestClient, str]) -> None:
    client, csrf = dev_client
    t = _create(client, csrf)
    client.cookies.clear()
    for method, path, body in [
        ("GET", "/api/v1/tokens", None),
        ("POST", "/api/v1/tokens", {"name": "child", "scopes": []}),
        ("POST", f"/api/v1/tokens/{t['id']}/rotate", {}),
    ]:
        r = client.request(method, path, json=body, headers=_bearer(t["token"]))
        assert r.status_code == 403, (method, path)
        assert r.json()["error"]["code"] == "session_required"


def test_me_with_session_and_with_token(dev_client: tuple[TestClient, str]) -> None:
    client, csrf = dev_client
    t = _create(client, csrf)
    by_session = client.get("/api/v1/me").json()
    assert by_session["auth"] == "session" and "token_id" not in by_session
    assert set(by_session["scopes"]) == {"developer.manage_tokens", "users.read", "roles.read"}
    by_token = client.get("/api/v1/me", headers=_bearer(t["token"])).json()
    assert by_token["auth"] == "token" and by_token["token_id"] == t["id"]
    assert by_token["scopes"] == ["users.read"]
    assert by_token["tenant"]["name"] == "Acme"


def test_rotate_over_http(dev_client: tuple[TestClient, str], clock: FrozenClock) -> None:
    client, csrf = dev_client
    old = _create(client, csrf)
    r = client.post(
        f"/api/v1/tokens/{old['id']}/rotate", json={"grace_period_seconds": 3600}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["name"] == old["name"] and new["scopes"] == old["scopes"] and new["token"] != old["token"]
    assert new["rotated_from"]["id"] == old["id"]
    assert client.get("/api/v1/me", headers=_bearer(old["token"])).status_code == 200
    clock.advance(seconds=3600)
    r = client.get("/api/v1/me", headers=_bearer(old["token"]))
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    assert client.get("/api/v1/me", headers=_bearer(new["token"])).status_code == 200
    bad = client.post(
        f"/api/v1/tokens/{old['id']}/rotate", json={"grace_period_seconds": -1}, headers={"X-CSRF-Token": csrf}
    )
    assert bad.status_code == 422


def test_logout_ends_the_session_server_side(dev_client: tuple[TestClient, str]) -> None:
    client, csrf = dev_client
    cookie = client.cookies.get("kbai_session")
    assert client.delete("/api/v1/session", headers={"X-CSRF-Token": csrf}).status_code == 204
    client.cookies.set("kbai_session", cookie or "")
    r = client.get("/api/v1/tokens")
    assert r.status_code == 401 and r.json()["error"]["code"] == "not_authenticated"


def test_session_expires(world: World, app_client: TestClient, clock: FrozenClock) -> None:
    login(app_client, "dev@acme.test", "dev-password-1")
    assert app_client.get("/api/v1/me").status_code == 200
    clock.advance(seconds=world.services.settings.session_ttl_seconds)
    assert app_client.get("/api/v1/me").status_code == 401


def test_deactivation_ends_sessions_and_tokens(dev_client: tuple[TestClient, str], world: World) -> None:
    client, csrf = dev_client
    t = _create(client, csrf)
    world.services.access.deactivate_user(OPERATOR, world.dev.user_id)  # type: ignore[arg-type]
    assert client.get("/api/v1/me").status_code == 401
    r = client.get("/api/v1/me", headers=_bearer(t["token"]))
    assert r.status_code == 401 and "deactivated" in r.json()["error"]["message"]
    r = client.post("/api/v1/session", json={"email": "dev@acme.test", "password": "dev-password-1"})
    # The same answer as a wrong password (issue 13, finding 11): nothing says the password was right.
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"


def test_permission_checks_for_sessions_and_tokens(dev_client: tuple[TestClient, str]) -> None:
    client, csrf = dev_client
    # dev holds users.read and roles.read but not users.manage / audit.read
    assert client.get("/api/v1/users").status_code == 200
    r = client.post("/api/v1/users", json={"email": "new@acme.test"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert "users.manage" in r.json()["error"]["message"]
    assert client.get("/api/v1/audit").status_code == 403
    t = _create(client, csrf)  # scopes: users.read only
    assert client.get("/api/v1/users", headers=_bearer(t["token"])).status_code == 200
    r = client.get("/api/v1/roles", headers=_bearer(t["token"]))
    assert r.status_code == 403
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert 'scope="roles.read"' in r.headers["www-authenticate"]


def test_admin_manages_roles_and_users(world: World, app_client: TestClient) -> None:
    csrf = login(app_client, "admin@acme.test", "admin-password-1")
    h = {"X-CSRF-Token": csrf}
    roles = app_client.get("/api/v1/roles").json()["roles"]
    assert {r["name"] for r in roles} == {"Admin", "Member", "Developers"}
    admin_role = next(r for r in roles if r["name"] == "Admin")
    assert admin_role["builtin"] is True and "developer.manage_tokens" in admin_role["permissions"]
    r = app_client.post("/api/v1/roles", json={"name": "Auditors", "permissions": ["audit.read"]}, headers=h)
    assert r.status_code == 201 and r.json()["permissions"] == ["audit.read"]
    role_id = r.json()["id"]
    r = app_client.put(f"/api/v1/roles/{role_id}", json={"permissions": ["audit.read", "users.read"]}, headers=h)
    assert r.status_code == 200 and set(r.json()["permissions"]) == {"audit.read", "users.read"}
    r = app_client.put(f"/api/v1/roles/{role_id}", json={"permissions": ["nope.nope"]}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_permission"
    r = app_client.post("/api/v1/users", json={"email": "carol@acme.test", "roles": ["Auditors"]}, headers=h)
    assert r.status_code == 201 and r.json()["roles"] == ["Auditors"] and "password" not in r.json()
    assert "/invitations/" in r.json()["invitation_url"]
    carol = r.json()["id"]
    r = app_client.put(f"/api/v1/users/{carol}/roles", json={"roles": ["Member"]}, headers=h)
    assert r.status_code == 200 and r.json()["roles"] == ["Member"]
    r = app_client.post(f"/api/v1/users/{carol}/deactivate", headers=h)
    assert r.status_code == 200 and r.json()["active"] is False
    admin_id = next(u["id"] for u in app_client.get("/api/v1/users").json()["users"] if u["email"] == "admin@acme.test")
    r = app_client.post(f"/api/v1/users/{admin_id}/deactivate", headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "last_admin"


def test_audit_endpoint_newest_first_and_paginated(world: World, app_client: TestClient) -> None:
    csrf = login(app_client, "admin@acme.test", "admin-password-1")
    _create(app_client, csrf, name="one")
    page = app_client.get("/api/v1/audit", params={"limit": 2}).json()
    assert [e["action"] for e in page["events"]] == ["token.create", "session.login"]
    assert page["next_cursor"] is not None
    rest = app_client.get("/api/v1/audit", params={"cursor": page["next_cursor"], "limit": 200}).json()
    assert rest["events"] and all(e["id"] < page["events"][-1]["id"] for e in rest["events"])
    only = app_client.get("/api/v1/audit", params={"action": "token.create"}).json()["events"]
    assert len(only) == 1 and only[0]["details"]["prefix"].startswith("kbai_pk_") and only[0]["ip"]


def test_other_tenant_sees_nothing(world: World, app_client: TestClient) -> None:
    other = build_world(world.services, tenant="Globex", domain="globex.test")
    csrf = login(app_client, "dev@acme.test", "dev-password-1")
    mine = _create(app_client, csrf)
    app_client.cookies.clear()
    csrf_b = login(app_client, "admin@globex.test", "admin-password-1")
    h = {"X-CSRF-Token": csrf_b}
    assert app_client.post(f"/api/v1/tokens/{mine['id']}/revoke", headers=h).status_code == 404
    assert app_client.get(f"/api/v1/tokens/{mine['id']}").status_code == 404
    assert app_client.get(f"/api/v1/roles/{world.dev_role_id}").status_code == 404
    assert app_client.put(f"/api/v1/roles/{world.dev_role_id}", json={"permissions": []}, headers=h).status_code == 404
    assert app_client.post(f"/api/v1/users/{world.dev.user_id}/deactivate", headers=h).status_code == 404
    emails = {u["email"] for u in app_client.get("/api/v1/users").json()["users"]}
    assert emails == {"admin@globex.test", "dev@globex.test"}
    assert all(e["action"] != "token.create" for e in app_client.get("/api/v1/audit").json()["events"])
    assert other.tenant_id != world.tenant_id


def test_error_envelopes_for_unknown_route_method_and_bad_json(dev_client: tuple[TestClient, str]) -> None:
    client, csrf = dev_client
    r = client.get("/api/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.patch("/api/v1/tokens")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = client.post(
        "/api/v1/tokens", content=b"{not json", headers={"X-CSRF-Token": csrf, "content-type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
    r = client.post("/api/v1/tokens", json={"name": "x", "scopes": [], "extra": 1}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and "extra is not a known field" in r.json()["error"]["message"]
    r = client.post(
        "/api/v1/tokens", json={"name": "x", "scopes": [], "expires_in_days": "90"}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 422 and "expires_in_days" in r.json()["error"]["message"]
    assert client.get("/api/v1/tokens").json()["tokens"] == []


def test_oversized_body_is_413(dev_client: tuple[TestClient, str]) -> None:
    client, csrf = dev_client
    big = b'{"name": "' + b"a" * 2_000_000 + b'", "scopes": []}'
    r = client.post("/api/v1/tokens", content=big, headers={"X-CSRF-Token": csrf, "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


def test_missing_and_wrong_scheme_authorization(world: World, app_client: TestClient) -> None:
    r = app_client.get("/api/v1/me")
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="kbai"'
    r = app_client.get("/api/v1/me", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]


def test_security_headers_and_request_id(world: World, app_client: TestClient) -> None:
    r = app_client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-request-id"] == "abc-123"


def test_fresh_request_ids_are_random_hex_and_never_repeat_across_batches_or_a_fork(
    world: World, app_client: TestClient
) -> None:
    """Ids come from a pool filled 256 at a time: over several pools, on three routes (the raw-ASGI fronts
    of /auth/check and /api/v1/me, and the middleware of every other), each is 32 hex digits and unique; a
    bad X-Request-Id is replaced; a forked child starts with an empty pool, not a copy of the parent's."""
    _, token = world.services.tokens.create(world.dev, "ids", [])
    bearer = {"Authorization": f"Bearer {token}"}
    seen: set[str] = set()
    for i in range(300):
        for path, headers in (("/healthz", {}), ("/auth/check", bearer), ("/api/v1/me", bearer)):
            got = app_client.get(path, headers={**headers, "X-Request-Id": "bad id!" if i % 7 == 0 else ""})
            rid = got.headers["x-request-id"]
            assert re.fullmatch(r"[0-9a-f]{32}", rid), rid
            seen.add(rid)
    assert len(seen) == 900
    from kbai.web.middleware import new_request_id

    new_request_id()  # the parent's pool holds ids now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the first id it makes, to the parent
        os.close(read)
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parents = {new_request_id() for _ in range(new_request_id.BATCH)}
    assert re.fullmatch(r"[0-9a-f]{32}", child) and child not in parents | seen


def test_openapi_documents_every_endpoint_and_both_auth_schemes(world: World, app_client: TestClient) -> None:
    doc = app_client.get("/openapi.json").json()
    paths = doc["paths"]
    for path, method in [
        ("/api/v1/session", "post"),
        ("/api/v1/session", "delete"),
        ("/api/v1/tokens", "get"),
        ("/api/v1/tokens", "post"),
        ("/api/v1/tokens/{token_id}/revoke", "post"),
        ("/api/v1/tokens/{token_id}/rotate", "post"),
        ("/api/v1/me", "get"),
        ("/api/v1/permissions", "get"),
        ("/api/v1/roles", "get"),
        ("/api/v1/roles", "post"),
        ("/api/v1/roles/{role_id}", "get"),
        ("/api/v1/roles/{role_id}", "put"),
        ("/api/v1/users", "get"),
        ("/api/v1/users", "post"),
        ("/api/v1/users/{user_id}/roles", "put"),
        ("/api/v1/users/{user_id}/deactivate", "post"),
        ("/api/v1/users/{user_id}/reactivate", "post"),
        ("/api/v1/audit", "get"),
        ("/api/v1/introspect", "post"),
        ("/auth/check", "get"),
        ("/healthz", "get"),
        ("/metrics", "get"),
    ]:
        assert method in paths.get(path, {}), (method, path)
    schemes = doc["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert schemes["APIKeyCookie"]["in"] == "cookie"
    assert "serviceCredential" in schemes
    assert "token" in doc["components"]["schemas"]["TokenCreatedOut"]["properties"]


def test_permissions_catalog_grouped(dev_client: tuple[TestClient, str]) -> None:
    client, _ = dev_client
    groups = client.get("/api/v1/permissions").json()["groups"]
    assert [g["name"] for g in groups] == ["Developer", "Users", "Roles", "Audit"]
    assert groups[0]["permissions"][0] == {
        "key": "developer.manage_tokens",
        "label": "Manage API Tokens",
        "session_only": True,
    }
    flagged = {p["key"] for g in groups for p in g["permissions"] if p["session_only"]}
    assert flagged == {"developer.manage_tokens", "developer.manage_service_tokens", "users.manage", "roles.manage"}


def test_a_session_only_scope_is_a_422_naming_it(dev_client: tuple[TestClient, str]) -> None:
    client, csrf = dev_client
    r = client.post(
        "/api/v1/tokens",
        json={"name": "x", "scopes": ["users.read", "developer.manage_tokens"]},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "session_only_scope"
    assert "developer.manage_tokens" in r.json()["error"]["message"]
    assert client.get("/api/v1/tokens").json()["tokens"] == []


def test_rotate_twice_is_a_409_naming_the_replacement(dev_client: tuple[TestClient, str]) -> None:
    client, csrf = dev_client
    old = _create(client, csrf)
    first = client.post(
        f"/api/v1/tokens/{old['id']}/rotate", json={"grace_period_seconds": 86400}, headers={"X-CSRF-Token": csrf}
    )
    assert first.status_code == 201 and first.json()["old_token_stops_at"] is not None
    again = client.post(f"/api/v1/tokens/{old['id']}/rotate", json={}, headers={"X-CSRF-Token": csrf})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_rotated"
    assert f"token {first.json()['id']}" in again.json()["error"]["message"]


def test_failed_logins_are_rate_limited(world: World, app_client: TestClient) -> None:
    limit = world.services.settings.login_failures_per_minute
    for _ in range(limit):
        r = app_client.post("/api/v1/session", json={"email": "dev@acme.test", "password": "nope-nope-nope"})
        assert r.status_code == 401
    r = app_client.post("/api/v1/session", json={"email": "dev@acme.test", "password": "dev-password-1"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["code"] == "rate_limited"


def test_out_of_range_ids_are_422_not_500(world: World, app_client: TestClient) -> None:
    csrf = login(app_client, "admin@acme.test", "admin-password-1")
    h = {"X-CSRF-Token": csrf}
    huge = "99999999999999999999"
    for method, path, body in [
        ("GET", f"/api/v1/tokens/{huge}", None),
        ("POST", f"/api/v1/tokens/{huge}/revoke", None),
        ("GET", "/api/v1/roles/2147483648", None),
        ("PUT", f"/api/v1/users/{huge}/roles", {"roles": []}),
        ("PUT", "/api/v1/users/1/roles", {"roles": [int(huge)]}),
        ("GET", f"/api/v1/audit?actor_user_id={huge}", None),
        ("GET", f"/api/v1/tokens?cursor={huge}", None),
    ]:
        r = app_client.request(method, path, json=body, headers=h)
        assert r.status_code == 422, (method, path, r.status_code)
        assert r.json()["error"]["code"] == "validation_error"


def test_operator_can_revoke_a_deactivated_users_token(dev_client: tuple[TestClient, str], world: World) -> None:
    client, csrf = dev_client
    t = _create(client, csrf)
    world.services.access.deactivate_user(OPERATOR, world.dev.user_id)  # type: ignore[arg-type]
    view = world.services.tokens.revoke(OPERATOR, t["id"])
    assert view.status == "revoked"
