"""SCIM 2.0 provisioning in-process, on SQLite and PostgreSQL: provisioning credentials, Users and Groups, and
their effects (exactly an admin's: sessions end, tokens stop or lose scopes, audit names the credential)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from kbai.app import create_app
from kbai.services import Services
from kbai.store.audit import Actor
from kbai.store.models import AuditEvent, ProvisioningCredential
from tests.conftest import World, build_world

OPERATOR = Actor.operator()
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


class Scim:
    """A SCIM client of one tenant: its credential as Bearer, bodies as application/scim+json."""

    def __init__(self, client: TestClient, secret: str) -> None:
        self.client = client
        self.headers = {
            "Authorization": f"Bearer {secret}",
            "Content-Type": "application/scim+json",
            "Accept": "application/scim+json",
        }

    def __call__(self, method: str, path: str, body: Any = None, **headers: str) -> Any:
        kwargs: dict[str, Any] = {"headers": {**self.headers, **headers}}
        if body is not None:
            kwargs["json"] = body
        return self.client.request(method, "/scim/v2" + path, **kwargs)

    def patch(self, path: str, *operations: dict[str, Any]) -> Any:
        return self("PATCH", path, {"schemas": [PATCH], "Operations": list(operations)})

    def find(self, user_name: str) -> dict[str, Any]:
        r = self("GET", f'/Users?filter=userName eq "{user_name}"')
        assert r.status_code == 200, r.text
        (found,) = r.json()["Resources"]
        return found  # type: ignore[no-any-return]


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services, start_background=False), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def scim(world: World, client: TestClient) -> Scim:
    _, secret = world.services.provisioning.create(OPERATOR, world.tenant_id, "Okta")
    return Scim(client, secret)


def _login(client: TestClient, email: str, password: str) -> str:
    r = client.post("/api/v1/session", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["csrf_token"])


def _scim_error(r: Any, status: int, scim_type: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/scim+json")
    body = r.json()
    assert body["schemas"] == [ERROR] and body["status"] == str(status) and body["detail"]
    assert body.get("scimType") == scim_type, body
    return body  # type: ignore[no-any-return]


# ---- provisioning credentials ----------------------------------------------------------------------
def test_a_credential_is_shown_once_stored_as_a_digest_and_reaches_only_its_tenant(
    world: World, client: TestClient
) -> None:
    svc = world.services
    globex = build_world(svc, tenant="Globex", domain="globex.test")
    csrf = _login(client, "admin@acme.test", "admin-password-1")
    r = client.post("/api/v1/scim-credentials", json={"name": "Okta"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    made = r.json()
    secret = made["token"]
    assert secret.startswith("kbai_scim_") and len(secret) == 74 and made["prefix"] == secret[:14]
    assert made["scim_base_url"] == "http://testserver/scim/v2"
    with svc.db.read() as s:
        row = s.scalar(select(ProvisioningCredential).where(ProvisioningCredential.id == made["id"]))
        assert row is not None and row.secret_digest == hashlib.sha256(secret.encode()).hexdigest()
    listed = client.get("/api/v1/scim-credentials").json()
    assert [c["name"] for c in listed["scim_credentials"]] == ["Okta"] and secret not in str(listed)

    acme = Scim(client, secret)
    names = {u["userName"] for u in acme("GET", "/Users").json()["Resources"]}
    assert names == {"admin@acme.test", "dev@acme.test"}
    _, other_secret = svc.provisioning.create(OPERATOR, globex.tenant_id, "Entra")
    other = Scim(client, other_secret)
    assert {u["userName"] for u in other("GET", "/Users").json()["Resources"]} == {
        "admin@globex.test",
        "dev@globex.test",
    }
    # Another tenant's ids are simply not there.
    _scim_error(other("GET", f"/Users/{world.dev.user_id}"), 404)
    _scim_error(other.patch(f"/Users/{world.dev.user_id}", {"op": "replace", "path": "active", "value": False}), 404)
    _scim_error(other("DELETE", f"/Groups/{world.dev_role_id}"), 404)
    assert svc.access.get_user(OPERATOR, world.dev.user_id).active


def test_only_a_member_holding_every_permission_manages_credentials(world: World, client: TestClient) -> None:
    csrf = _login(client, "dev@acme.test", "dev-password-1")
    r = client.post("/api/v1/scim-credentials", json={"name": "Okta"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403 and "every permission" in r.json()["error"]["message"]
    assert client.get("/api/v1/scim-credentials").status_code == 403
    _, token = world.services.tokens.create(world.dev, "ci", ["users.read"])
    r = client.get("/api/v1/scim-credentials", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "session_required"
    assert client.post("/api/v1/scim-credentials", json={}).status_code == 403  # (no CSRF header)


def test_a_revoked_or_wrong_credential_gets_a_scim_401(world: World, scim: Scim, client: TestClient) -> None:
    svc = world.services
    view, secret = svc.provisioning.create(OPERATOR, world.tenant_id, "Old")
    assert Scim(client, secret)("GET", "/Users").status_code == 200
    csrf = _login(client, "admin@acme.test", "admin-password-1")
    r = client.post(f"/api/v1/scim-credentials/{view.id}/revoke", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    r = Scim(client, secret)("GET", "/Users")
    _scim_error(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")
    for header in ("Bearer kbai_scim_" + "0" * 64, "Basic Zm9vOmJhcg==", "Bearer " + secret.upper(), "Bearer "):
        _scim_error(client.get("/scim/v2/Users", headers={"Authorization": header}), 401)
    _scim_error(client.get("/scim/v2/Users"), 401)
    assert scim("GET", "/Users").status_code == 200  # the other credential is untouched


def test_a_leak_report_revokes_a_provisioning_credential(world: World, scim: Scim, client: TestClient) -> None:
    secret = scim.headers["Authorization"].removeprefix("Bearer ")
    r = client.post("/api/v1/credentials/revoke", json={"credentials": [secret]})
    assert r.status_code == 202, r.text
    _scim_error(scim("GET", "/Users"), 401)
    with world.services.db.read() as s:
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "provisioning_credential.leak_report"))
        assert event is not None and event.tenant_id == world.tenant_id and secret not in str(event.details)


# ---- Users ----------------------------------------------------------------------------------------
def test_okta_create_filter_deactivate_reactivate_and_delete(world: World, scim: Scim, client: TestClient) -> None:
    """Okta's sequence: POST the user, find it by userName, PATCH replace active "False" (Okta sends strings
    and capitalised ops), then back to true, then DELETE. Effects as on the Users page."""
    svc = world.services
    r = scim(
        "POST",
        "/Users",
        {
            "schemas": [USER],
            "userName": "jo@acme.test",
            "externalId": "00u1okta",
            "name": {"givenName": "Jo", "familyName": "Doe"},
            "emails": [{"value": "jo@acme.test", "primary": True, "type": "work"}],
            "active": True,
        },
    )
    assert r.status_code == 201 and r.headers["content-type"].startswith("application/scim+json"), r.text
    jo = r.json()
    assert jo["userName"] == "jo@acme.test" and jo["externalId"] == "00u1okta" and jo["active"] is True
    assert r.headers["location"] == jo["meta"]["location"] and r.headers["etag"] == jo["meta"]["version"]
    assert [g["display"] for g in jo["groups"]] == ["Member"]
    assert scim.find("JO@acme.test")["id"] == jo["id"]  # userName matches case-insensitively
    assert scim("GET", '/Users?filter=externalId eq "00u1okta"').json()["totalResults"] == 1
    _scim_error(scim("POST", "/Users", {"schemas": [USER], "userName": "Jo@Acme.test"}), 409, "uniqueness")

    # The person signs in and makes a token; the provider deactivates them.
    svc.access.set_password(OPERATOR, int(jo["id"]), "jo-password-123")
    svc.access.set_user_roles(OPERATOR, int(jo["id"]), ["Developers"])
    person = world.actor("jo@acme.test")
    kept, kept_token = svc.tokens.create(person, "kept", ["users.read"])
    revoked, revoked_token = svc.tokens.create(person, "revoked", ["users.read"])
    svc.tokens.revoke(person, revoked.id)
    session = TestClient(client.app)
    _login(session, "jo@acme.test", "jo-password-123")
    assert session.get("/api/v1/me").status_code == 200
    assert svc.tokens.verify(kept_token).authenticated

    r = scim.patch(f"/Users/{jo['id']}", {"op": "Replace", "path": "active", "value": "False"})
    assert r.status_code == 200 and r.json()["active"] is False, r.text
    assert session.get("/api/v1/me").status_code == 401, "the session ended"
    assert not svc.tokens.verify(kept_token).authenticated, "the token stopped"
    with svc.db.read() as s:
        event = s.scalar(
            select(AuditEvent).where(AuditEvent.action == "user.deactivate", AuditEvent.target_id == jo["id"])
        )
        assert event is not None and event.actor.startswith("scim:Okta (kbai_scim_")

    r = scim.patch(f"/Users/{jo['id']}", {"op": "replace", "value": {"active": True}})
    assert r.status_code == 200 and r.json()["active"] is True
    assert svc.tokens.verify(kept_token).authenticated, "a stopped token works again"
    assert not svc.tokens.verify(revoked_token).authenticated, "a revoked one never does"

    assert scim("DELETE", f"/Users/{jo['id']}").status_code == 204
    _scim_error(scim("GET", f"/Users/{jo['id']}"), 404)
    assert scim("GET", '/Users?filter=userName eq "jo@acme.test"').json()["totalResults"] == 0
    assert not svc.access.get_user(OPERATOR, int(jo["id"])).active, "DELETE deactivates the membership"
    assert not svc.tokens.verify(kept_token).authenticated
    # Provisioned again later: the same membership comes back (its revoked token stays revoked).
    again = scim("POST", "/Users", {"schemas": [USER], "userName": "jo@acme.test"})
    assert again.status_code == 201 and again.json()["id"] == jo["id"] and again.json()["active"] is True
    assert not svc.tokens.verify(revoked_token).authenticated


def test_any_user_name_is_accepted_and_the_email_comes_from_emails(world: World, scim: Scim) -> None:
    svc = world.services
    r = scim(
        "POST",
        "/Users",
        {
            "schemas": [USER],
            "userName": "jdoe",
            "emails": [{"value": "other@acme.test"}, {"value": "John.Doe@Acme.test", "primary": True}],
        },
    )
    assert r.status_code == 201, r.text
    assert svc.access.get_user(OPERATOR, int(r.json()["id"])).email == "john.doe@acme.test"
    r = scim("POST", "/Users", {"schemas": [USER], "userName": "no-email-at-all"})
    assert r.status_code == 201 and "emails" not in r.json(), r.text
    r = scim(
        "POST", "/Users", {"schemas": [USER], "userName": "x", "emails": [{"value": "not an email", "primary": True}]}
    )
    _scim_error(r, 400, "invalidValue")


def test_the_last_active_admin_stays(world: World, scim: Scim) -> None:
    admin = scim.find("admin@acme.test")
    r = scim.patch(f"/Users/{admin['id']}", {"op": "replace", "path": "active", "value": False})
    body = _scim_error(r, 409)
    assert "admin" in body["detail"].lower()
    _scim_error(scim("DELETE", f"/Users/{admin['id']}"), 409)
    assert scim("GET", f"/Users/{admin['id']}").json()["active"] is True
    assert world.services.access.get_user(OPERATOR, world.admin.user_id).active


def test_put_replaces_and_if_match_guards_every_write(world: World, scim: Scim) -> None:
    dev = scim.find("dev@acme.test")
    r = scim(
        "PUT",
        f"/Users/{dev['id']}",
        {"schemas": [USER], "userName": "dev@acme.test", "active": True, "name": {"givenName": "Dee"}},
        **{"If-Match": 'W/"stale"'},
    )
    _scim_error(r, 412)
    assert scim("GET", f"/Users/{dev['id']}").json() == dev, "nothing changed"
    r = scim(
        "PUT",
        f"/Users/{dev['id']}",
        {"schemas": [USER], "userName": "dev@acme.test", "active": True, "name": {"givenName": "Dee"}},
        **{"If-Match": dev["meta"]["version"]},
    )
    assert r.status_code == 200 and r.json()["name"] == {"givenName": "Dee"}
    assert r.json()["meta"]["version"] != dev["meta"]["version"] and r.headers["etag"] == r.json()["meta"]["version"]


def test_paging_and_attribute_selection(world: World, scim: Scim) -> None:
    for n in range(5):
        assert scim("POST", "/Users", {"schemas": [USER], "userName": f"p{n}@acme.test"}).status_code == 201
    page = scim("GET", "/Users?startIndex=3&count=2").json()
    assert page["totalResults"] == 7 and page["startIndex"] == 3 and page["itemsPerPage"] == 2
    assert [u["userName"] for u in page["Resources"]] == ["p0@acme.test", "p1@acme.test"]
    huge = scim("GET", "/Users?count=1000000000").json()
    assert huge["itemsPerPage"] == 7
    assert scim("GET", "/Users?count=-5").json()["itemsPerPage"] == 0
    only = scim("GET", "/Users?attributes=userName&count=1").json()["Resources"][0]
    assert set(only) == {"schemas", "id", "userName"}
    assert "emails" not in scim("GET", "/Users?excludedAttributes=emails").json()["Resources"][0]


# ---- Groups ---------------------------------------------------------------------------------------
def test_entra_group_membership_by_value_path_changes_token_scopes(world: World, scim: Scim) -> None:
    """Entra's sequence: add a member to a Group by PATCH add members, remove it by a value path; the
    person's token loses that role's permissions at once."""
    svc = world.services
    _, token = svc.tokens.create(world.dev, "ci", ["users.read", "roles.read"])
    groups = scim("GET", '/Groups?filter=displayName eq "Developers"').json()
    (developers,) = groups["Resources"]
    assert [m["value"] for m in developers["members"]] == [str(world.dev.user_id)]
    r = scim("POST", "/Groups", {"schemas": [GROUP], "displayName": "Readers", "externalId": "entra-readers"})
    assert r.status_code == 201, r.text
    readers = r.json()
    svc.access.update_role(OPERATOR, int(readers["id"]), ["users.read"])
    r = scim.patch(
        f"/Groups/{readers['id']}", {"op": "Add", "path": "members", "value": [{"value": str(world.dev.user_id)}]}
    )
    assert r.status_code == 200 and [m["value"] for m in r.json()["members"]] == [str(world.dev.user_id)]

    r = scim.patch(f"/Groups/{developers['id']}", {"op": "remove", "path": f'members[value eq "{world.dev.user_id}"]'})
    assert r.status_code == 200 and "members" not in r.json(), r.text
    result = svc.tokens.verify(token)
    assert result.authenticated and result.scopes == frozenset({"users.read"}), "roles.read went with the group"
    with svc.db.read() as s:
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "user.roles").order_by(AuditEvent.id.desc()))
        assert event is not None and event.actor.startswith("scim:Okta")
    # Another tenant's member cannot be added, and nothing about them is told.
    globex = build_world(svc, tenant="Globex", domain="globex.test")
    r = scim.patch(
        f"/Groups/{readers['id']}", {"op": "add", "path": "members", "value": [{"value": str(globex.dev.user_id)}]}
    )
    body = _scim_error(r, 400, "invalidValue")
    assert "globex" not in body["detail"]


def test_built_in_groups_stay_and_a_deleted_group_takes_its_permissions(world: World, scim: Scim) -> None:
    svc = world.services
    for builtin in ("Admin", "Member"):
        (group,) = scim("GET", f'/Groups?filter=displayName eq "{builtin}"').json()["Resources"]
        _scim_error(scim("DELETE", f"/Groups/{group['id']}"), 400, "mutability")
        _scim_error(
            scim.patch(f"/Groups/{group['id']}", {"op": "replace", "path": "displayName", "value": "X"}),
            400,
            "mutability",
        )
    _, token = svc.tokens.create(world.dev, "ci", ["users.read", "roles.read"])
    assert scim("DELETE", f"/Groups/{world.dev_role_id}").status_code == 204
    _scim_error(scim("GET", f"/Groups/{world.dev_role_id}"), 404)
    assert svc.tokens.verify(token).scopes == frozenset()


def test_discovery_endpoints(scim: Scim) -> None:
    config = scim("GET", "/ServiceProviderConfig").json()
    assert config["patch"]["supported"] and config["filter"]["supported"] and config["etag"]["supported"]
    assert not config["bulk"]["supported"]
    types = {t["name"] for t in scim("GET", "/ResourceTypes").json()["Resources"]}
    assert types == {"User", "Group"}
    schemas = {s["id"] for s in scim("GET", "/Schemas").json()["Resources"]}
    assert USER in schemas and GROUP in schemas
    _scim_error(scim("POST", "/Schemas", {}), 405)
    _scim_error(scim("GET", "/Nothing"), 404)


# ---- the Provisioning (SCIM) page --------------------------------------------------------------------
def _csrf_of(html: str) -> str:
    import re

    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page's forms carry the session's CSRF token"
    return found.group(1)


def test_the_page_creates_shows_once_lists_and_revokes(world: World, client: TestClient) -> None:
    svc = world.services
    _login(client, "admin@acme.test", "admin-password-1")
    page = client.get("/system-settings/provisioning")
    assert page.status_code == 200 and "http://testserver/scim/v2" in page.text
    assert 'href="/system-settings/provisioning"' in page.text, "in the navigation of an admin"
    r = client.post("/system-settings/provisioning", data={"name": "Okta", "csrf_token": _csrf_of(page.text)})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    import re

    secret = re.search(r"kbai_scim_[0-9a-f]{64}", r.text)
    assert secret is not None and "It will not be shown again" in r.text
    found = svc.provisioning.authenticate(secret.group(0))
    assert found is not None and found.tenant_id == world.tenant_id and found.name == "Okta"
    again = client.get("/system-settings/provisioning")
    assert secret.group(0) not in again.text and secret.group(0)[:14] in again.text, "listed by its prefix only"
    r = client.post(
        f"/system-settings/provisioning/{found.id}/revoke",
        data={"csrf_token": _csrf_of(again.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303 and svc.provisioning.authenticate(secret.group(0)) is None
    assert "Revoked" in client.get("/system-settings/provisioning").text


def test_the_page_is_only_for_members_holding_every_permission(world: World, client: TestClient) -> None:
    _login(client, "dev@acme.test", "dev-password-1")
    assert 'href="/system-settings/provisioning"' not in client.get("/system-settings").text
    page = client.get("/system-settings/provisioning")
    assert page.status_code == 403 and "every permission" in page.text
