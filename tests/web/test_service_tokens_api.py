"""Service tokens over HTTP (in-process app, both backends): owned by the tenant, bounded by the creator's
permissions at creation and by the tenant's ceiling afterwards, their own limit, the identity they show
(/auth/check, introspection, /api/v1/me, the SDK), and the hand-over of a person's tokens at deactivation."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from kbai.app import create_app
from kbai.sdk.verifiers import Identity, LocalVerifier
from kbai.services import Services
from kbai.store.models import AuditEvent, Token
from tests.conftest import OPERATOR, World, build_world, give_dev_service_tokens, run_coroutine
from tests.web.conftest import login

S = "/api/v1/service-tokens"
_NAMES = itertools.count()


@pytest.fixture
def client(services: Services, world: World) -> Iterator[TestClient]:
    with TestClient(create_app(services, start_background=False)) as c:
        yield c


@pytest.fixture
def admin_csrf(client: TestClient) -> str:
    return login(client, "admin@acme.test", "admin-password-1")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _create(client: TestClient, csrf: str, name: str = "ci", scopes: list[str] | None = None) -> dict[str, Any]:
    body = {"name": name, "scopes": ["users.read"] if scopes is None else scopes}
    r = client.post(S, json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _check(client: TestClient, token: str, *scopes: str) -> Any:
    query = "&".join(f"scope={s}" for s in scopes)
    return client.get("/auth/check" + (f"?{query}" if query else ""), headers=_bearer(token))


# ---- create, list, revoke ------------------------------------------------------------------------
def test_create_marks_the_token_as_the_tenants_and_lists_it_apart(
    client: TestClient, admin_csrf: str, world: World
) -> None:
    made = _create(client, admin_csrf)
    admin = world.services.access.user_by_email("admin@acme.test", world.tenant_id)
    assert admin is not None
    assert (made["service"], made["created_by"], made["scopes"]) == (True, admin.id, ["users.read"])
    assert made["token"].startswith("kbai_pk_")
    listed = client.get(S).json()
    assert [t["id"] for t in listed["tokens"]] == [made["id"]]
    assert (listed["active"], listed["limit"]) == (1, 25)
    assert "token" not in listed["tokens"][0]
    # Not a personal token of its creator: not in their list, not counted toward their limit.
    assert made["id"] not in [t["id"] for t in client.get("/api/v1/tokens").json()["tokens"]]
    assert world.services.tokens.allowance(admin.id)[0] == 0


def test_revoke_stops_it_and_is_audited(client: TestClient, admin_csrf: str, services: Services) -> None:
    made = _create(client, admin_csrf)
    assert _check(client, made["token"]).status_code == 200
    r = client.post(f"{S}/{made['id']}/revoke", headers={"X-CSRF-Token": admin_csrf})
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    assert _check(client, made["token"]).status_code == 401
    with services.db.read() as s:
        actions = set(s.scalars(select(AuditEvent.action).where(AuditEvent.target_id == str(made["id"]))))
    assert {"service_token.create", "service_token.revoke"} <= actions


def test_scopes_are_bounded_by_the_creators_permissions(client: TestClient, services: Services, world: World) -> None:
    give_dev_service_tokens(world)
    csrf = login(client, "dev@acme.test", "dev-password-1")
    r = client.post(S, json={"name": "x", "scopes": ["audit.read"]}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unheld_scope"
    r = client.post(S, json={"name": "x", "scopes": ["users.manage"]}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422  # session-only: never a token scope (and dev does not hold it either)
    assert client.get(S).json()["tokens"] == []


def test_without_the_permission_every_route_is_403(client: TestClient) -> None:
    csrf = login(client, "dev@acme.test", "dev-password-1")
    h = {"X-CSRF-Token": csrf}
    assert client.get(S).status_code == 403
    assert client.post(S, json={"name": "x", "scopes": []}, headers=h).status_code == 403
    assert client.get(f"{S}/ceiling").status_code == 403
    assert client.put(f"{S}/ceiling", json={"permissions": None}, headers=h).status_code == 403


def test_a_token_cannot_manage_service_tokens(client: TestClient, admin_csrf: str) -> None:
    made = _create(client, admin_csrf)
    h = _bearer(made["token"])
    for r in (
        client.get(S, headers=h),
        client.post(S, json={"name": "y", "scopes": []}, headers=h),
        client.post(f"{S}/{made['id']}/revoke", headers=h),
        client.get(f"{S}/ceiling", headers=h),
        client.put(f"{S}/ceiling", json={"permissions": None}, headers=h),
    ):
        assert r.status_code == 403 and r.json()["error"]["code"] == "session_required", r.text


def test_the_tenant_limit_refuses_naming_it_and_personal_tokens_do_not_count(
    client: TestClient, admin_csrf: str, services: Services
) -> None:
    services.access.set_service_limit(OPERATOR, "Acme", 1)
    _create(client, admin_csrf, "one")
    r = client.post(S, json={"name": "two", "scopes": []}, headers={"X-CSRF-Token": admin_csrf})
    assert r.status_code == 409 and r.json()["error"]["code"] == "service_token_limit_reached"
    assert "the limit is 1" in r.json()["error"]["message"]
    # A personal token of the same person is still fine: the two limits are separate.
    r = client.post("/api/v1/tokens", json={"name": "mine", "scopes": []}, headers={"X-CSRF-Token": admin_csrf})
    assert r.status_code == 201, r.text


def test_another_tenant_can_neither_list_nor_revoke(client: TestClient, admin_csrf: str, services: Services) -> None:
    made = _create(client, admin_csrf)
    build_world(services, "Globex", "globex.test")
    with TestClient(create_app(services, start_background=False)) as other:
        csrf = login(other, "admin@globex.test", "admin-password-1")
        assert other.get(S).json()["tokens"] == []
        r = other.post(f"{S}/{made['id']}/revoke", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 404
        # Nor through the personal routes.
        assert other.post(f"/api/v1/tokens/{made['id']}/revoke", headers={"X-CSRF-Token": csrf}).status_code == 404
    assert _check(client, made["token"]).status_code == 200


# ---- identity -------------------------------------------------------------------------------------
def test_auth_check_names_no_person_and_says_service_token(client: TestClient, admin_csrf: str) -> None:
    made = _create(client, admin_csrf)
    r = _check(client, made["token"], "users.read")
    assert r.status_code == 200, r.text
    assert r.headers["x-kbai-service-token"] == "true"
    for absent in ("x-kbai-user", "x-kbai-user-email", "x-kbai-user-external-id"):
        assert absent not in r.headers
    assert r.headers["x-kbai-scopes"] == "users.read"
    assert r.headers["x-kbai-token-id"] == str(made["id"])


def test_a_personal_token_has_no_service_header(client: TestClient, admin_csrf: str) -> None:
    r = client.post("/api/v1/tokens", json={"name": "mine", "scopes": []}, headers={"X-CSRF-Token": admin_csrf})
    checked = _check(client, r.json()["token"])
    assert "x-kbai-service-token" not in checked.headers and "x-kbai-user" in checked.headers


def test_introspection_sub_is_service_id(client: TestClient, admin_csrf: str, services: Services) -> None:
    made = _create(client, admin_csrf)
    credential, secret = services.credentials.create(OPERATOR, f"svc-{next(_NAMES)}")
    basic = "Basic " + base64.b64encode(f"{credential.client_id}:{secret}".encode()).decode()
    r = client.post("/api/v1/introspect", data={"token": made["token"]}, headers={"Authorization": basic})
    body = r.json()
    assert (body["active"], body["sub"], body["service_token"]) == (True, f"service:{made['id']}", True)
    assert "username" not in body


def test_me_has_no_user(client: TestClient, admin_csrf: str, world: World) -> None:
    made = _create(client, admin_csrf)
    body = client.get("/api/v1/me", headers=_bearer(made["token"])).json()
    assert body["user"] is None
    assert (body["tenant"]["id"], body["token_id"], body["auth"]) == (world.tenant_id, made["id"], "token")


def test_sdk_identity_says_service_token(client: TestClient, admin_csrf: str, services: Services) -> None:
    made = _create(client, admin_csrf)
    identity = run_coroutine(LocalVerifier(services=services).verify(made["token"]))
    assert isinstance(identity, Identity)
    assert (identity.service_token, identity.user_id, identity.email) == (True, None, None)
    assert identity.scopes == frozenset({"users.read"})


# ---- survives the creator; the ceiling -------------------------------------------------------------
def test_survives_the_creators_deactivation(client: TestClient, services: Services, world: World) -> None:
    give_dev_service_tokens(world)
    csrf = login(client, "dev@acme.test", "dev-password-1")
    made = _create(client, csrf)
    dev = services.access.user_by_email("dev@acme.test", world.tenant_id)
    assert dev is not None
    services.access.deactivate_user(OPERATOR, dev.id)
    r = _check(client, made["token"], "users.read")
    assert r.status_code == 200, r.text
    assert r.headers["x-kbai-scopes"] == "users.read"


def test_a_ceiling_change_takes_effect_at_once(client: TestClient, admin_csrf: str) -> None:
    made = _create(client, admin_csrf, scopes=["users.read", "roles.read"])
    assert _check(client, made["token"]).headers["x-kbai-scopes"] == "users.read roles.read"  # warm in the cache
    h = {"X-CSRF-Token": admin_csrf}
    r = client.put(f"{S}/ceiling", json={"permissions": ["roles.read", "audit.read"]}, headers=h)
    assert r.status_code == 200 and r.json() == {"permissions": ["roles.read", "audit.read"], "default": False}
    assert client.get(f"{S}/ceiling").json()["permissions"] == ["roles.read", "audit.read"]
    assert _check(client, made["token"]).headers["x-kbai-scopes"] == "roles.read"
    assert _check(client, made["token"], "users.read").status_code == 403
    r = client.put(f"{S}/ceiling", json={"permissions": None}, headers=h)
    assert r.json() == {"permissions": None, "default": True}
    assert _check(client, made["token"], "users.read").status_code == 200


def test_nobody_sets_a_ceiling_with_what_they_dont_hold(client: TestClient, services: Services, world: World) -> None:
    give_dev_service_tokens(world)
    csrf = login(client, "dev@acme.test", "dev-password-1")
    r = client.put(f"{S}/ceiling", json={"permissions": ["users.read"]}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403  # dev lacks roles.manage
    admin_csrf = login(client, "admin@acme.test", "admin-password-1")
    r = client.put(f"{S}/ceiling", json={"permissions": ["users.manage"]}, headers={"X-CSRF-Token": admin_csrf})
    assert r.status_code == 422 and r.json()["error"]["code"] == "session_only_scope"
    assert client.get(f"{S}/ceiling").json()["default"] is True


# ---- hand-over at deactivation --------------------------------------------------------------------
def _dev_tokens(client: TestClient) -> tuple[dict[str, Any], dict[str, Any]]:
    csrf = login(client, "dev@acme.test", "dev-password-1")
    made = []
    for name in ("keep", "stop"):
        r = client.post(
            "/api/v1/tokens",
            json={"name": name, "scopes": ["users.read", "roles.read"]},
            headers={"X-CSRF-Token": csrf},
        )
        assert r.status_code == 201, r.text
        made.append(r.json())
    return made[0], made[1]


def test_hand_over_keeps_the_plaintext_cuts_scopes_and_stops_the_rest(
    client: TestClient, services: Services, world: World
) -> None:
    keep, stop = _dev_tokens(client)
    csrf = login(client, "admin@acme.test", "admin-password-1")
    assert client.put(f"{S}/ceiling", json={"permissions": ["users.read"]}, headers={"X-CSRF-Token": csrf}).is_success
    dev = services.access.user_by_email("dev@acme.test", world.tenant_id)
    assert dev is not None
    listed = client.get(f"/api/v1/users/{dev.id}/tokens").json()["tokens"]
    assert {t["id"] for t in listed} == {keep["id"], stop["id"]} and "last_used_at" in listed[0]
    r = client.post(
        f"/api/v1/users/{dev.id}/deactivate", json={"hand_over": [keep["id"]]}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 200 and r.json()["active"] is False, r.text
    kept = _check(client, keep["token"])
    assert kept.status_code == 200 and kept.headers["x-kbai-service-token"] == "true"
    assert kept.headers["x-kbai-scopes"] == "users.read"
    assert _check(client, stop["token"]).status_code == 401
    service = client.get(S).json()["tokens"]
    assert [(t["id"], t["scopes"], t["created_by"]) for t in service] == [(keep["id"], ["users.read"], dev.id)]
    with services.db.read() as s:
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "token.hand_over"))
    assert event is not None and event.target_id == str(keep["id"])


def test_hand_over_beyond_the_limit_changes_nothing(client: TestClient, services: Services, world: World) -> None:
    keep, stop = _dev_tokens(client)
    services.access.set_service_limit(OPERATOR, "Acme", 1)
    csrf = login(client, "admin@acme.test", "admin-password-1")
    dev = services.access.user_by_email("dev@acme.test", world.tenant_id)
    assert dev is not None
    r = client.post(
        f"/api/v1/users/{dev.id}/deactivate",
        json={"hand_over": [keep["id"], stop["id"]]},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 409 and "the limit is 1" in r.json()["error"]["message"], r.text
    assert services.access.user_by_email("dev@acme.test", world.tenant_id).active  # type: ignore[union-attr]
    with services.db.read() as s:
        owners = set(s.scalars(select(Token.user_id).where(Token.id.in_([keep["id"], stop["id"]]))))
    assert owners == {dev.id}
    assert _check(client, keep["token"]).headers["x-kbai-user"] is not None


def test_hand_over_refuses_a_token_that_is_not_the_users(
    client: TestClient, admin_csrf: str, services: Services, world: World
) -> None:
    theirs = client.post("/api/v1/tokens", json={"name": "adm", "scopes": []}, headers={"X-CSRF-Token": admin_csrf})
    dev = services.access.user_by_email("dev@acme.test", world.tenant_id)
    assert dev is not None
    r = client.post(
        f"/api/v1/users/{dev.id}/deactivate",
        json={"hand_over": [theirs.json()["id"]]},
        headers={"X-CSRF-Token": admin_csrf},
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_handed_over"
    assert services.access.user_by_email("dev@acme.test", world.tenant_id).active  # type: ignore[union-attr]
    assert _check(client, theirs.json()["token"]).status_code == 200


def _manager(services: Services, world: World, email: str, permissions: list[str]) -> None:
    role = services.access.create_role(OPERATOR, world.tenant_id, email.split("@")[0], permissions)
    services.access.create_user(OPERATOR, world.tenant_id, email, "manager-password-1", [role.id])


def test_hand_over_needs_the_service_token_permission(client: TestClient, services: Services, world: World) -> None:
    keep, _ = _dev_tokens(client)
    # holds all that dev holds (else no deactivation at all), but may not make service tokens
    _manager(
        services, world, "people@acme.test", ["users.read", "users.manage", "roles.read", "developer.manage_tokens"]
    )
    csrf = login(client, "people@acme.test", "manager-password-1")
    dev = services.access.user_by_email("dev@acme.test", world.tenant_id)
    assert dev is not None
    r = client.post(
        f"/api/v1/users/{dev.id}/deactivate", json={"hand_over": [keep["id"]]}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 403 and "developer.manage_service_tokens" in r.json()["error"]["message"], r.text
    assert services.access.user_by_email("dev@acme.test", world.tenant_id).active  # type: ignore[union-attr]
    with services.db.read() as s:
        assert s.scalar(select(Token.user_id).where(Token.id == keep["id"])) == dev.id


def test_the_inventory_lists_exports_and_revokes_service_tokens(
    client: TestClient, admin_csrf: str, services: Services
) -> None:
    """Exactly like personal tokens: listed (owner null), in the CSV (service true), and revoked by a reviewer
    with the cache told at once (the next check is refused) and no one to notify."""
    from sqlalchemy import func, select

    from kbai.store.models import AuditEvent, Notification

    made = _create(client, admin_csrf, name="deploys")
    assert _check(client, made["token"]).status_code == 200  # cached now
    listed = client.get("/api/v1/admin/tokens").json()["tokens"]
    row = next(t for t in listed if t["id"] == made["id"])
    assert row["owner"] is None and row["service"] is True
    csv_text = client.get("/api/v1/admin/tokens/export").text
    header, *lines = csv_text.strip().splitlines()
    columns = header.split(",")
    ours = next(line.split(",") for line in lines if line.startswith(f"{made['id']},"))
    assert ours[columns.index("service")] == "true" and ours[columns.index("owner")] == ""
    page = client.get("/system-settings/tokens")
    assert page.status_code == 200 and "Service token" in page.text and "deploys" in page.text
    with services.db.read() as s:
        notices = s.scalar(select(func.count(Notification.id)))
    r = client.post(f"/api/v1/admin/tokens/{made['id']}/revoke", headers={"X-CSRF-Token": admin_csrf})
    assert r.status_code == 200 and r.json()["status"] == "revoked" and r.json()["owner"] is None
    assert _check(client, made["token"]).status_code == 401  # every instance hears of it: this one at once
    with services.db.read() as s:
        assert s.scalar(select(func.count(Notification.id))) == notices
        audited = s.scalars(
            select(AuditEvent).where(AuditEvent.action == "token.revoke", AuditEvent.target_id == str(made["id"]))
        ).all()
    assert len(audited) == 1


def test_a_service_token_rotates_like_a_personal_one(client: TestClient, admin_csrf: str, world: World) -> None:
    """Same name, scopes and restrictions; the new one is the tenant's too, the rotating admin its creator;
    the old one stops after the grace; a second rotation of it is 409; the personal route does not find it."""
    r = client.post(
        S,
        json={"name": "deploys", "scopes": ["users.read"], "rate_limit": {"requests": 50, "per": "minute"}},
        headers={"X-CSRF-Token": admin_csrf},
    )
    made = r.json()
    assert _check(client, made["token"]).status_code == 200
    r = client.post(f"{S}/{made['id']}/rotate", json={}, headers={"X-CSRF-Token": admin_csrf})
    assert r.status_code == 201, r.text
    new = r.json()
    assert (new["service"], new["name"], new["scopes"], new["rate_limit"]) == (
        True,
        "deploys",
        ["users.read"],
        {"requests": 50, "per": "minute"},
    )
    assert new["created_by"] == world.admin.user_id and new["rotated_from_id"] == made["id"]
    assert new["rotated_from"]["id"] == made["id"] and new["token"] != made["token"]
    fresh = _check(client, new["token"])
    assert fresh.status_code == 200 and fresh.headers["x-kbai-service-token"] == "true"
    assert _check(client, made["token"]).status_code == 401  # grace 0: stopped at once, on this instance too
    again = client.post(f"{S}/{made['id']}/rotate", json={}, headers={"X-CSRF-Token": admin_csrf})
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_rotated"
    personal = client.post(f"/api/v1/tokens/{new['id']}/rotate", json={}, headers={"X-CSRF-Token": admin_csrf})
    assert personal.status_code == 404
    listed = {t["id"] for t in client.get(S).json()["tokens"]}
    assert {made["id"], new["id"]} <= listed


def test_a_holder_changes_a_service_token_with_patch_and_nobody_else_can(
    client: TestClient, admin_csrf: str, services: Services, world: World
) -> None:
    made = _create(client, admin_csrf, name="deploys", scopes=["users.read", "roles.read"])
    _create(client, admin_csrf, name="taken")
    body = {
        "name": "deploys (prod)",
        "description": "CI of the prod cluster",
        "rate_limit": {"requests": 10, "per": "second"},
        "quota": {"remaining": 1000, "refill": {"amount": 1000, "interval": "day"}},
        "scopes": ["users.read"],
    }
    r = client.patch(f"/api/v1/tokens/{made['id']}", json=body, headers={"X-CSRF-Token": admin_csrf})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["service"], out["name"], out["description"], out["scopes"]) == (
        True,
        "deploys (prod)",
        "CI of the prod cluster",
        ["users.read"],
    )
    assert out["rate_limit"] == {"requests": 10, "per": "second"} and out["quota"]["remaining"] == 1000
    assert _check(client, made["token"], "roles.read").status_code == 403  # the dropped scope, at once
    clash = client.patch(f"/api/v1/tokens/{made['id']}", json={"name": "TAKEN"}, headers={"X-CSRF-Token": admin_csrf})
    assert clash.status_code == 409
    # A developer without developer.manage_service_tokens does not find it.
    dev = TestClient(client.app)
    dev_csrf = login(dev, "dev@acme.test", "dev-password-1")
    r = dev.patch(f"/api/v1/tokens/{made['id']}", json={"name": "mine now"}, headers={"X-CSRF-Token": dev_csrf})
    assert r.status_code == 404
    assert client.get(S).json()["tokens"][-1]["name"] in ("deploys (prod)", "taken")


def test_a_hand_over_tells_the_other_service_token_managers(
    client: TestClient, admin_csrf: str, services: Services, world: World
) -> None:
    from sqlalchemy import select

    from kbai.store.models import Notification
    from tests.tokens.helpers import assert_no_secret

    role = services.access.create_role(OPERATOR, world.tenant_id, "Automation", ["developer.manage_service_tokens"])
    keeper, _ = services.access.create_user(
        OPERATOR, world.tenant_id, "keeper@acme.test", "keeper-password-1", [role.id]
    )
    view, token = services.tokens.create(world.dev, "nightly sync", ["users.read"])
    r = client.post(
        f"/api/v1/users/{world.dev.user_id}/deactivate",
        json={"hand_over": [view.id]},
        headers={"X-CSRF-Token": admin_csrf},
    )
    assert r.status_code == 200, r.text
    assert _check(client, token).status_code == 200  # kept, same plaintext
    with services.db.read() as s:
        notes = list(s.scalars(select(Notification).where(Notification.kind == "token.handed_over")))
    assert [n.user_id for n in notes] == [keeper.id]  # the admin who did it is not told
    assert view.prefix in notes[0].body and "dev@acme.test" in notes[0].title
    assert_no_secret(token, notes[0].body + notes[0].title, "hand-over notice")


def test_an_admin_pauses_and_resumes_a_service_token(client: TestClient, admin_csrf: str) -> None:
    made = _create(client, admin_csrf, name="paused one")
    assert _check(client, made["token"]).status_code == 200
    r = client.post(f"/api/v1/tokens/{made['id']}/pause", headers={"X-CSRF-Token": admin_csrf})
    assert r.status_code == 200 and r.json()["status"] == "paused" and r.json()["service"] is True
    assert _check(client, made["token"]).status_code == 401
    r = client.post(f"/api/v1/tokens/{made['id']}/resume", headers={"X-CSRF-Token": admin_csrf})
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert _check(client, made["token"]).status_code == 200
