"""The service-token ceiling page (issue #19), in-process: who sees it, who changes it, and that a saved
ceiling bounds an existing service token at once (and the default restores it)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from kbai.app import create_app
from kbai.services import Services
from kbai.store.models import AuditEvent
from tests.conftest import OPERATOR, World, give_dev_service_tokens
from tests.ui.test_pages import alert, as_admin, as_dev, csrf_of, login, make_member

KEYS = "/system-settings/api-keys"
CEILING = KEYS + "/service-tokens/ceiling"
DEFAULT_TEXT = "Default: each service token acts with the scopes it was made with"


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services, start_background=False), follow_redirects=False) as c:
        yield c


def _audits(world: World) -> int:
    with world.services.db.read() as s:
        return int(s.scalar(select(func.count()).where(AuditEvent.action == "service_token.ceiling")) or 0)


def _checked(page: str) -> set[str]:
    return set(re.findall(r'name="permissions" value="([^"]+)" checked', page))


def test_admin_saves_a_ceiling_that_bounds_a_token_and_resets_to_the_default(client: TestClient, world: World) -> None:
    _view, plaintext = world.services.tokens.create_service(world.admin, "Billing sync", ["users.read", "roles.read"])
    bearer = {"Authorization": f"Bearer {plaintext}"}
    assert client.get("/auth/check", headers=bearer).headers["x-kbai-scopes"] == "users.read roles.read"
    csrf = as_admin(client)
    assert f'href="{CEILING}"' in client.get(KEYS).text  # linked from the service-token table
    page = client.get(CEILING)
    assert page.status_code == 200 and DEFAULT_TEXT in page.text
    assert "Service-token ceiling" in page.text and 'value="default"' in page.text and _checked(page.text) == set()
    assert 'value="users.read"' in page.text and 'value="users.manage"' not in page.text  # no session-only one

    r = client.post(CEILING, data={"mode": "custom", "permissions": ["roles.read"], "csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"] == CEILING + "?done=saved"
    assert world.services.tokens.ceiling(world.tenant_id) == ["roles.read"]
    page = client.get(r.headers["location"]).text
    assert "Ceiling saved. Every service token of Acme acts within it from its next request." in page
    assert DEFAULT_TEXT not in page and "<code>roles.read</code>" in page and _checked(page) == {"roles.read"}
    found = world.services.tokens.verify(plaintext)
    assert found.ok and found.scopes == {"roles.read"}
    check = client.get("/auth/check", headers=bearer)
    assert check.status_code == 200 and check.headers["x-kbai-scopes"] == "roles.read"
    assert client.get("/auth/check?scope=users.read", headers=bearer).status_code == 403
    assert _audits(world) == 1

    r = client.post(CEILING, data={"mode": "default", "permissions": ["roles.read"], "csrf_token": csrf})
    assert r.status_code == 303
    assert world.services.tokens.ceiling(world.tenant_id) is None
    assert DEFAULT_TEXT in client.get(CEILING).text
    assert client.get("/auth/check?scope=users.read", headers=bearer).status_code == 200
    assert world.services.tokens.verify(plaintext).scopes == {"users.read", "roles.read"}
    assert _audits(world) == 2


def test_a_service_token_manager_without_manage_roles_only_reads(client: TestClient, world: World) -> None:
    world.services.tokens.set_ceiling(world.admin, ["users.read"])
    give_dev_service_tokens(world)
    csrf = as_dev(client)
    page = client.get(CEILING)
    assert page.status_code == 200 and "<code>users.read</code>" in page.text
    assert "Only an admin with Manage roles" in page.text
    assert 'name="permissions"' not in page.text and 'value="default"' not in page.text  # no editor
    for data in ({"mode": "custom", "permissions": ["users.read", "roles.read"]}, {"mode": "default"}):
        r = client.post(CEILING, data={**data, "csrf_token": csrf})
        assert r.status_code == 403 and "roles.manage" in r.text
    assert world.services.tokens.ceiling(world.tenant_id) == ["users.read"]
    assert _audits(world) == 1


def test_keys_the_editor_does_not_hold_are_named_not_offered(client: TestClient, world: World) -> None:
    world.services.tokens.set_ceiling(world.admin, ["users.read", "audit.read"])
    role = world.services.access.create_role(
        OPERATOR, world.tenant_id, "Ceiling keepers", ["developer.manage_service_tokens", "roles.manage"]
    )
    dev = world.services.access.user_by_email("dev@acme.test", world.tenant_id)
    assert dev is not None
    world.services.access.set_user_roles(OPERATOR, dev.id, [world.dev_role_id, role.id])
    csrf = as_dev(client)
    page = client.get(CEILING).text
    assert _checked(page) == {"users.read"} and 'value="audit.read"' not in page
    assert "not yours to allow" in page and "<code>audit.read</code>" in page
    r = client.post(CEILING, data={"mode": "custom", "permissions": ["audit.read"], "csrf_token": csrf})
    assert r.status_code == 403 and "audit.read" in r.text  # nobody allows what they don't hold
    assert world.services.tokens.ceiling(world.tenant_id) == ["users.read", "audit.read"]


def test_without_the_permission_the_page_and_the_form_are_refused(client: TestClient, world: World) -> None:
    make_member(world)
    for who in ("dev", "member"):
        csrf = as_dev(client) if who == "dev" else login(client, "member@acme.test", "member-password-1")
        r = client.get(CEILING)
        assert r.status_code == 403 and "developer.manage_service_tokens" in r.text, who
        r = client.post(CEILING, data={"mode": "default", "csrf_token": csrf})
        assert r.status_code == 403 and "developer.manage_service_tokens" in r.text, who
        assert 'href="/system-settings/api-keys/service-tokens/ceiling"' not in client.get(KEYS).text
    assert world.services.tokens.ceiling(world.tenant_id) is None and _audits(world) == 0


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        ({"mode": "custom", "permissions": ["nope.read"]}, 422, "unknown_scope"),
        ({"mode": "custom", "permissions": ["users.manage"]}, 422, "session_only_scope"),
        ({"mode": "custom", "permissions": ["users.read", "users.read"]}, 422, "duplicate_scope"),
        ({"mode": "everything", "permissions": ["users.read"]}, 400, "bad_request"),
    ],
)
def test_a_refused_ceiling_is_shown_in_the_page_and_changes_nothing(
    client: TestClient, world: World, data: dict[str, object], status: int, code: str
) -> None:
    world.services.tokens.set_ceiling(world.admin, ["roles.read"])
    csrf = as_admin(client)
    r = client.post(CEILING, data={**data, "csrf_token": csrf})
    assert r.status_code == status, r.text[:300]
    assert f'data-code="{code}"' in r.text and alert(r.text)
    assert "Change the ceiling" in r.text  # the editor again, with the error
    assert world.services.tokens.ceiling(world.tenant_id) == ["roles.read"] and _audits(world) == 1


def test_the_form_needs_its_csrf_field(client: TestClient, world: World) -> None:
    as_admin(client)
    for data in ({"mode": "custom", "permissions": ["users.read"]}, {"mode": "custom", "csrf_token": "wrong"}):
        r = client.post(CEILING, data=data)
        assert r.status_code == 403 and "csrf_failed" in r.text
    assert world.services.tokens.ceiling(world.tenant_id) is None and _audits(world) == 0
    assert csrf_of(client, CEILING)  # the page itself carries the field
