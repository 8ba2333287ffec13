"""Service tokens on the pages, in-process (TestClient on the ``services`` fixture): the second table on API
Keys and its "New service token" form, revoke, and the deactivation step that keeps tokens for the tenant."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from kbai.app import create_app
from kbai.services import Services
from kbai.store.models import AuditEvent
from tests.conftest import OPERATOR, World, build_world, give_dev_service_tokens
from tests.ui.test_pages import TOKEN_RE, alert, as_admin, as_dev, csrf_of, login, make_member

KEYS = "/system-settings/api-keys"
NEW = KEYS + "/service-tokens/new"
SERVICE = KEYS + "/service-tokens"


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services, start_background=False), follow_redirects=False) as c:
        yield c


def _create(c: TestClient, csrf: str, **fields: object) -> object:
    form = {"name": "Billing sync", "scopes": ["users.read"], "expiry": "90", "csrf_token": csrf, **fields}
    return c.post(SERVICE, data=form)


def test_admin_sees_the_service_table_and_allowance_a_developer_does_not(client: TestClient, world: World) -> None:
    world.services.tokens.create_service(world.admin, "Nightly backup", ["users.read"])
    as_admin(client)
    page = client.get(KEYS).text
    assert "Service tokens of Acme" in page
    assert "1 of 25 service tokens" in page
    row = re.search(r'<tr class="status-active" id="service-token-\d+">.*?</tr>', page, re.S)
    assert row and "Nightly backup" in row.group(0) and "admin@acme.test" in row.group(0)
    assert 'href="/system-settings/api-keys/service-tokens/new"' in page

    as_dev(client)
    page = client.get(KEYS).text
    assert "Service tokens of" not in page and "Nightly backup" not in page and "service-tokens/new" not in page
    r = client.get(NEW)
    assert r.status_code == 403 and "developer.manage_service_tokens" in r.text
    r = _create(client, csrf_of(client, KEYS))
    assert r.status_code == 403  # type: ignore[attr-defined]
    assert world.services.tokens.service_allowance(world.tenant_id)[0] == 1


def test_create_shows_the_plaintext_once_and_it_works(client: TestClient, world: World) -> None:
    csrf = as_admin(client)
    form = client.get(NEW).text
    # Only what the admin holds and a token can carry: no session-only permission is offered.
    assert 'value="users.read"' in form and 'value="developer.manage_tokens"' not in form
    assert 'value="users.manage"' not in form and "0 of 25 service tokens" in form
    r = _create(client, csrf)
    assert r.status_code == 303 and r.headers["location"] == KEYS  # type: ignore[attr-defined]
    page = client.get(KEYS).text
    assert "Service token “Billing sync” created" in page and "It will not be shown again" in page
    (plaintext,) = set(TOKEN_RE.findall(page))
    found = world.services.tokens.verify(plaintext)
    assert found.ok and found.record is not None and found.record.service and found.scopes == {"users.read"}
    assert "1 of 25 service tokens" in page
    again = client.get(KEYS).text
    assert plaintext not in again and "Billing sync" in again  # shown once, listed after


@pytest.mark.parametrize(
    ("fields", "code", "field_id"),
    [
        ({"name": ""}, "validation_error", "token-name-error"),
        ({"scopes": []}, "validation_error", "scopes-error"),
        ({"scopes": ["users.manage"]}, "session_only_scope", "scopes-error"),
        ({"scopes": ["nope.read"]}, "unknown_scope", "scopes-error"),
        ({"expiry": "soon"}, "validation_error", "expiry-error"),
    ],
)
def test_create_form_errors_are_shown_under_their_field(
    client: TestClient, world: World, fields: dict[str, object], code: str, field_id: str
) -> None:
    csrf = as_admin(client)
    r = _create(client, csrf, **fields)
    assert r.status_code in (409, 422), r.text[:300]  # type: ignore[attr-defined]
    assert f'id="{field_id}" data-code="{code}"' in r.text  # type: ignore[attr-defined]
    assert world.services.tokens.service_allowance(world.tenant_id)[0] == 0


def test_description_and_allowlist_are_kept_and_a_required_allowlist_is_asked_for(
    client: TestClient, world: World
) -> None:
    csrf = as_admin(client)
    assert 'name="self_rotate"' not in client.get(NEW).text  # a service token does not rotate itself
    r = _create(
        client,
        csrf,
        description="Owned by the billing team",
        allowed_ips="203.0.113.0/24\n10.0.0.0/8",
        rate_requests="50",
        rate_per="minute",
        quota_requests="10,000",
        quota_refill="day",
    )
    assert r.status_code == 303  # type: ignore[attr-defined]
    (view,) = world.services.tokens.list_service(world.admin)
    assert view.description == "Owned by the billing team" and view.allowed_ips == ["203.0.113.0/24", "10.0.0.0/8"]
    assert view.rate_limit is not None and (view.rate_limit.requests, view.rate_limit.per) == (50, "minute")
    assert view.quota is not None and (view.quota.remaining, view.quota.refill_interval) == (10_000, "day")
    page = client.get(KEYS).text
    assert "Owned by the billing team" in page and "<code>203.0.113.0/24</code>" in page
    world.services.policies.set(OPERATOR, world.tenant_id, require_allowlist=True)
    form = client.get(NEW).text
    assert "(an IP allowlist is required)" in form
    r = _create(client, csrf, name="No ranges")
    assert r.status_code == 422 and 'id="token-allowed-ips-error" data-code="policy_allowlist_required"' in r.text  # type: ignore[attr-defined]


def test_name_taken_and_limit_reached(client: TestClient, world: World) -> None:
    csrf = as_admin(client)
    assert _create(client, csrf).status_code == 303  # type: ignore[attr-defined]
    r = _create(client, csrf, name="billing SYNC")
    assert r.status_code == 409 and 'id="token-name-error" data-code="name_taken"' in r.text  # type: ignore[attr-defined]
    with world.services.db.write() as s:
        from kbai.store.models import Tenant

        tenant = s.get(Tenant, world.tenant_id)
        assert tenant is not None
        tenant.max_service_tokens = 1
    assert "1 of 1 service tokens" in client.get(KEYS).text
    assert "Create service token" not in client.get(NEW).text  # the form gives way to the limit's words
    r = _create(client, csrf, name="Second")
    assert r.status_code == 409 and "limit is 1" in alert(r.text)  # type: ignore[attr-defined]


def test_revoke_from_the_page(client: TestClient, world: World) -> None:
    view, plaintext = world.services.tokens.create_service(world.admin, "Status page", ["users.read"])
    csrf = as_admin(client)
    page = client.get(KEYS).text
    assert f'action="{SERVICE}/{view.id}/revoke" data-confirm-title="Revoke “Status page”?"' in page
    r = client.post(f"{SERVICE}/{view.id}/revoke", data={"csrf_token": csrf})
    assert r.status_code == 303
    page = client.get(r.headers["location"]).text
    assert f"Token “Status page” (<code>{view.prefix}</code>) revoked" in page
    assert not world.services.tokens.verify(plaintext).ok
    assert client.post(f"{SERVICE}/{view.id}/revoke", data={"csrf_token": "forged"}).status_code == 403
    # A personal token's id is no service token: 404, and it keeps working.
    mine, mine_plain = world.services.tokens.create(world.admin, "Mine", ["users.read"])
    assert client.post(f"{SERVICE}/{mine.id}/revoke", data={"csrf_token": csrf}).status_code == 404
    assert world.services.tokens.verify(mine_plain).ok


def test_deactivation_step_keeps_one_token_and_lets_the_other_stop(client: TestClient, world: World) -> None:
    kept, kept_plain = world.services.tokens.create(world.dev, "Nightly sync", ["users.read"])
    gone, gone_plain = world.services.tokens.create(world.dev, "Local script", ["roles.read"])
    dev_id = world.dev.user_id
    csrf = as_admin(client)
    users = client.get("/system-settings/users").text
    assert f'href="/system-settings/users/{dev_id}/deactivate">Deactivate' in users  # a step, not a dialog
    step = client.get(f"/system-settings/users/{dev_id}/deactivate").text
    for t in (kept, gone):
        assert t.name in step and t.prefix in step
        assert f'<option value="{t.id}">Keep as a service token</option>' in step
    assert step.count('<option value="" selected>Let it stop</option>') == 2
    r = client.post(
        f"/system-settings/users/{dev_id}/deactivate", data={"hand_over": [str(kept.id), ""], "csrf_token": csrf}
    )
    assert r.status_code == 303 and r.headers["location"].endswith("done=deactivated_kept")
    found = world.services.tokens.verify(kept_plain)
    assert found.ok and found.record is not None and found.record.service
    assert not world.services.tokens.verify(gone_plain).ok
    page = client.get(KEYS).text
    assert "Nightly sync" in page and "dev@acme.test" in page  # now under the tenant's, its creator named
    with world.services.db.read() as s:
        assert s.scalar(select(AuditEvent.action).where(AuditEvent.action == "token.hand_over")) == "token.hand_over"


def test_a_refused_hand_over_shows_on_the_step_and_changes_nothing(client: TestClient, world: World) -> None:
    from kbai.store.models import Tenant

    view, plaintext = world.services.tokens.create(world.dev, "Nightly sync", ["users.read"])
    with world.services.db.write() as s:
        tenant = s.get(Tenant, world.tenant_id)
        assert tenant is not None
        tenant.max_service_tokens = 0
    csrf = as_admin(client)
    r = client.post(
        f"/system-settings/users/{world.dev.user_id}/deactivate", data={"hand_over": str(view.id), "csrf_token": csrf}
    )
    assert r.status_code == 409 and "the limit is 0" in alert(r.text) and "Nothing was changed" in alert(r.text)
    assert f"Deactivate {world.dev.email}?" in r.text and 'name="hand_over"' in r.text  # the step again
    found = world.services.tokens.verify(plaintext)
    assert found.ok and found.record is not None and not found.record.service  # still dev's, still working
    assert world.services.access.get_user(OPERATOR, world.dev.user_id).active  # type: ignore[arg-type]


def test_a_user_manager_without_the_permission_is_offered_no_keep(client: TestClient, world: World) -> None:
    role = world.services.access.create_role(
        OPERATOR, world.tenant_id, "People", ["users.read", "users.manage", "roles.read", "developer.manage_tokens"]
    )
    world.services.access.create_user(OPERATOR, world.tenant_id, "hr@acme.test", "hr-password-1", [role.id])
    member, _ = world.services.access.create_user(OPERATOR, world.tenant_id, "m@acme.test", "m-password-12", ["Member"])
    _, plaintext = world.services.tokens.create(world.dev, "Cron", ["users.read"])
    csrf = login(client, "hr@acme.test", "hr-password-1")
    step = client.get(f"/system-settings/users/{world.dev.user_id}/deactivate").text
    assert "Cron" in step and "Keep as a service token" not in step and "Stops" in step
    # Sending a keep anyway is refused, nothing changes.
    token_id = world.services.tokens.active_of(world.dev.user_id)[0].id  # type: ignore[arg-type]
    r = client.post(
        f"/system-settings/users/{world.dev.user_id}/deactivate", data={"hand_over": str(token_id), "csrf_token": csrf}
    )
    assert r.status_code == 403 and world.services.tokens.verify(plaintext).ok
    r = client.post(f"/system-settings/users/{world.dev.user_id}/deactivate", data={"csrf_token": csrf})
    assert r.status_code == 303 and not world.services.tokens.verify(plaintext).ok
    # Someone without tokens deactivates as before: straight from the table's confirm dialog.
    users = client.get("/system-settings/users").text
    assert f'action="/system-settings/users/{member.id}/deactivate" data-confirm-title' in users


def test_deactivation_step_needs_users_manage_and_the_tenant(client: TestClient, world: World) -> None:
    as_dev(client)
    assert client.get(f"/system-settings/users/{world.admin.user_id}/deactivate").status_code == 403
    as_admin(client)
    assert client.get("/system-settings/users/2147483647/deactivate").status_code == 404
    csrf = csrf_of(client, KEYS)
    r = client.post(
        f"/system-settings/users/{world.dev.user_id}/deactivate", data={"hand_over": "x1", "csrf_token": csrf}
    )
    assert r.status_code == 422


def _service_ids(world: World) -> list[int]:
    return [v.id for v in world.services.tokens.list_service(world.admin, limit=1000)]


def test_rotate_from_the_page_shows_the_new_token_once(client: TestClient, world: World) -> None:
    old, old_plain = world.services.tokens.create_service(
        world.admin, "Billing sync", ["users.read"], expires_in_days=30
    )
    csrf = as_admin(client)
    page = client.get(KEYS).text
    assert f'action="{SERVICE}/{old.id}/rotate"' in page and f'id="rotate-{old.id}"' in page
    r = client.post(f"{SERVICE}/{old.id}/rotate", data={"grace": "0", "lifetime": "same", "csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"] == KEYS
    page = client.get(KEYS).text
    assert "Service token “Billing sync” rotated" in page and "It will not be shown again" in page
    assert f"It replaces <code>{old.prefix}</code>" in page and "has stopped working" in page
    (plaintext,) = set(TOKEN_RE.findall(page))
    new = world.services.tokens.verify(plaintext)
    assert new.ok and new.record is not None and new.record.service and new.scopes == {"users.read"}
    assert not world.services.tokens.verify(old_plain).ok  # no grace chosen: the old one stopped at once
    again = client.get(KEYS).text
    assert plaintext not in again
    row = re.search(rf'<tr class="status-active" id="service-token-{new.record.token_id}">.*?</tr>', again, re.S)
    assert row and f'href="#service-token-{old.id}"' in row.group(0) and "Rotated from" in row.group(0)
    with world.services.db.read() as s:
        actions = list(s.scalars(select(AuditEvent.action).where(AuditEvent.target_id == str(new.record.token_id))))
    assert "service_token.rotate" in actions
    # Rotated once, the old one has no Rotate button; asked again anyway, it is refused above the table.
    r = client.post(f"{SERVICE}/{old.id}/rotate", data={"grace": "0", "csrf_token": csrf})
    assert r.status_code == 409 and 'data-code="already_rotated"' in r.text
    assert len(_service_ids(world)) == 2


def test_rotate_with_a_grace_period_and_a_bad_choice(client: TestClient, world: World) -> None:
    old, old_plain = world.services.tokens.create_service(world.admin, "Status page", ["users.read"])
    csrf = as_admin(client)
    r = client.post(f"{SERVICE}/{old.id}/rotate", data={"grace": "5", "csrf_token": csrf})
    assert r.status_code == 422 and "Choose how long the old token keeps working" in alert(r.text)
    assert r.text.index("Choose how long") > r.text.index('id="service-tokens"')  # shown above the service table
    assert _service_ids(world) == [old.id] and world.services.tokens.verify(old_plain).ok
    r = client.post(f"{SERVICE}/{old.id}/rotate", data={"grace": "3600", "csrf_token": csrf})
    assert r.status_code == 303
    page = client.get(KEYS).text
    assert "keeps working until" in page and world.services.tokens.verify(old_plain).ok  # in its grace period
    assert client.post(f"{SERVICE}/{old.id}/rotate", data={"grace": "0", "csrf_token": "forged"}).status_code == 403


def test_pause_and_resume_from_the_page(client: TestClient, world: World) -> None:
    view, plaintext = world.services.tokens.create_service(world.admin, "Nightly backup", ["users.read"])
    bearer = {"Authorization": f"Bearer {plaintext}"}
    csrf = as_admin(client)
    assert client.get("/auth/check", headers=bearer).status_code == 200
    page = client.get(KEYS).text
    assert f'action="{SERVICE}/{view.id}/pause"' in page
    r = client.post(f"{SERVICE}/{view.id}/pause", data={"csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"].endswith(f"done=service_paused#service-token-{view.id}")
    page = client.get(r.headers["location"]).text
    assert "Service token paused." in page and "counts toward the tenant" in page
    row = re.search(rf'<tr class="status-paused" id="service-token-{view.id}">.*?</tr>', page, re.S)
    assert row and "Paused" in row.group(0) and f'action="{SERVICE}/{view.id}/resume"' in row.group(0)
    assert client.get("/auth/check", headers=bearer).status_code == 401
    r = client.post(f"{SERVICE}/{view.id}/resume", data={"csrf_token": csrf})
    assert r.status_code == 303 and "done=resumed" in r.headers["location"]
    assert client.get("/auth/check", headers=bearer).status_code == 200
    with world.services.db.read() as s:
        actions = list(s.scalars(select(AuditEvent.action).where(AuditEvent.target_id == str(view.id))))
    assert actions.count("token.pause") == 1 and actions.count("token.resume") == 1
    # Paused, then revoked: final; resume is refused above the service table and changes nothing.
    client.post(f"{SERVICE}/{view.id}/pause", data={"csrf_token": csrf})
    client.post(f"{SERVICE}/{view.id}/revoke", data={"csrf_token": csrf})
    r = client.post(f"{SERVICE}/{view.id}/resume", data={"csrf_token": csrf})
    assert r.status_code == 409 and "A revoked token never comes back" in alert(r.text)
    assert client.get("/auth/check", headers=bearer).status_code == 401
    assert client.post(f"{SERVICE}/{view.id}/pause", data={"csrf_token": "forged"}).status_code == 403


def test_a_developer_without_the_permission_changes_no_service_token(client: TestClient, world: World) -> None:
    view, plaintext = world.services.tokens.create_service(world.admin, "Billing sync", ["users.read"])
    csrf = as_dev(client)
    for action, form in (("rotate", {"grace": "0"}), ("pause", {}), ("resume", {}), ("revoke", {})):
        r = client.post(f"{SERVICE}/{view.id}/{action}", data={**form, "csrf_token": csrf})
        assert r.status_code == 403 and "developer.manage_service_tokens" in r.text, action
    assert _service_ids(world) == [view.id] and world.services.tokens.verify(plaintext).ok
    assert client.get(f"{KEYS}/{view.id}/activity").status_code == 404
    # Their own token is no service token: the service routes answer 404 and it keeps working.
    give_dev_service_tokens(world)
    csrf = as_dev(client)
    mine, mine_plain = world.services.tokens.create(world.actor("dev@acme.test"), "Mine", ["users.read"])
    for action in ("rotate", "pause", "resume"):
        r = client.post(f"{SERVICE}/{mine.id}/{action}", data={"grace": "0", "csrf_token": csrf})
        assert r.status_code == 404, action
    assert world.services.tokens.verify(mine_plain).ok


def test_a_holder_rotates_pauses_and_sees_the_activity_a_member_does_not(client: TestClient, world: World) -> None:
    view, plaintext = world.services.tokens.create_service(world.admin, "Nightly backup", ["users.read"])
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {plaintext}"}).status_code == 200
    world.services.usage.flush()
    give_dev_service_tokens(world)
    csrf = as_dev(client)  # holds developer.manage_service_tokens, not developer.review_tokens
    page = client.get(KEYS).text
    assert f'action="{SERVICE}/{view.id}/rotate"' in page and f'href="{KEYS}/{view.id}/activity"' in page
    activity = client.get(f"{KEYS}/{view.id}/activity")
    assert activity.status_code == 200, activity.text
    assert "service token of Acme" in activity.text and 'data-stat="total">1<' in activity.text
    assert client.get(f"/api/v1/tokens/{view.id}/activity").json()["total"] == 1
    assert client.post(f"{SERVICE}/{view.id}/pause", data={"csrf_token": csrf}).status_code == 303
    assert not world.services.tokens.verify(plaintext).ok
    assert client.post(f"{SERVICE}/{view.id}/resume", data={"csrf_token": csrf}).status_code == 303
    assert world.services.tokens.verify(plaintext).ok
    make_member(world)
    login(client, "member@acme.test", "member-password-1")
    assert client.get(f"{KEYS}/{view.id}/activity").status_code == 404
    assert client.get(f"/api/v1/tokens/{view.id}/activity").status_code == 404


def test_a_service_token_reads_no_activity_and_learns_nothing_of_another_tenants(
    client: TestClient, world: World
) -> None:
    other = build_world(world.services, "Globex", "globex.test")
    theirs, _ = world.services.tokens.create_service(other.admin, "Globex sync", ["users.read"])
    mine, plaintext = world.services.tokens.create_service(world.admin, "Acme sync", ["users.read"])
    bearer = {"Authorization": f"Bearer {plaintext}"}
    r = client.get(f"/api/v1/tokens/{theirs.id}/activity", headers=bearer)
    assert r.status_code == 404, r.text  # a null owner matches no one: not a 403 that says the id exists
    missing = client.get("/api/v1/tokens/999999/activity", headers=bearer)
    assert missing.status_code == 404 and missing.json()["error"] == r.json()["error"]
    r = client.get(f"/api/v1/tokens/{mine.id}/activity", headers=bearer)
    assert r.status_code == 403 and r.json()["error"]["code"] == "session_required"
