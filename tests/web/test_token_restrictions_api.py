"""Per-token restrictions over HTTP (in-process app, both backends): PATCH, pause and resume, the IP
allowlist on the API, /auth/check, introspection and the SDK, and self-rotation with reuse alerts."""

from __future__ import annotations

import base64
import itertools
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy import select

from kbai.app import create_app
from kbai.clock import FrozenClock
from kbai.sdk.middleware import install
from kbai.sdk.verifiers import LocalVerifier
from kbai.services import Services
from kbai.store.models import AuditEvent, Notification
from tests.conftest import OPERATOR, World
from tests.web.conftest import login

CLIENT_IP = "203.0.113.7"
_NAMES = itertools.count()
T = "/api/v1/tokens"


@pytest.fixture
def client(services: Services, world: World) -> Iterator[TestClient]:
    with TestClient(create_app(services, start_background=False), client=(CLIENT_IP, 50000)) as c:
        yield c


@pytest.fixture
def csrf(client: TestClient) -> str:
    return login(client, "dev@acme.test", "dev-password-1")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _create(client: TestClient, csrf: str, name: str = "cron", **extra: Any) -> dict[str, Any]:
    r = client.post(T, json={"name": name, "scopes": ["users.read"], **extra}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _basic(services: Services) -> dict[str, str]:
    credential, secret = services.credentials.create(OPERATOR, f"restrictions-{next(_NAMES)}")
    return {"Authorization": "Basic " + base64.b64encode(f"{credential.client_id}:{secret}".encode()).decode()}


# ---- the fields in the token JSON ----------------------------------------------------------------
def test_create_returns_and_lists_the_restrictions(client: TestClient, csrf: str) -> None:
    made = _create(client, csrf, description="Posts contacts", allowed_ips=["203.0.113.0/24"], self_rotate=True)
    assert (made["description"], made["allowed_ips"], made["self_rotate"], made["paused_at"]) == (
        "Posts contacts",
        ["203.0.113.0/24"],
        True,
        None,
    )
    listed = client.get(T).json()["tokens"][0]
    assert (listed["description"], listed["allowed_ips"], listed["self_rotate"]) == (
        "Posts contacts",
        ["203.0.113.0/24"],
        True,
    )


def test_patch_changes_only_what_is_sent_and_is_audited(client: TestClient, csrf: str, services: Services) -> None:
    made = _create(client, csrf, description="old")
    r = client.patch(
        f"{T}/{made['id']}", json={"name": "nightly", "allowed_ips": ["10.0.0.0/8"]}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["description"], r.json()["allowed_ips"]) == ("nightly", "old", ["10.0.0.0/8"])
    with services.db.read() as s:
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "token.update")).one()
    assert event.details["changes"]["allowed_ips"] == {"from": None, "to": ["10.0.0.0/8"]}
    # The token now refuses this client, at once.
    assert client.get("/api/v1/me", headers=_bearer(made["token"])).status_code == 401


# ---- pause and resume ------------------------------------------------------------------------------
def test_pause_answers_the_token_json_and_refuses_it_everywhere(
    client: TestClient, csrf: str, services: Services
) -> None:
    made = _create(client, csrf)
    token = made["token"]
    assert client.get("/auth/check", headers=_bearer(token)).status_code == 200
    r = client.post(f"{T}/{made['id']}/pause", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["status"] == "paused" and r.json()["paused_at"], r.text
    check = client.get("/auth/check", headers=_bearer(token))
    assert check.status_code == 401 and 'error="invalid_token"' in check.headers["www-authenticate"]
    assert "paused" in check.headers["www-authenticate"]
    assert client.get("/api/v1/me", headers=_bearer(token)).status_code == 401
    intro = client.post("/api/v1/introspect", data={"token": token}, headers=_basic(services))
    assert intro.json() == {"active": False}
    r = client.post(f"{T}/{made['id']}/resume", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert client.get("/auth/check", headers=_bearer(token)).status_code == 200


def test_an_admin_pauses_a_members_token_from_the_api(client: TestClient, csrf: str) -> None:
    made = _create(client, csrf)
    client.cookies.clear()
    admin_csrf = login(client, "admin@acme.test", "admin-password-1")
    r = client.post(f"{T}/{made['id']}/pause", headers={"X-CSRF-Token": admin_csrf})
    assert r.status_code == 200 and r.json()["status"] == "paused", r.text


# ---- the allowlist -----------------------------------------------------------------------------------
def test_outside_the_allowlist_is_401_counted_logged_and_shown_on_activity(
    client: TestClient, csrf: str, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    made = _create(client, csrf, allowed_ips=["198.51.100.0/24"])
    with caplog.at_level(logging.WARNING, logger="kbai.web"):
        r = client.get("/auth/check", headers=_bearer(made["token"]))
    assert r.status_code == 401
    assert "198.51.100" not in r.text and "198.51.100" not in r.headers["www-authenticate"]
    assert "cannot be used from this address" in r.json()["error"]["message"]
    assert any(
        "outside its IP allowlist" in rec.getMessage() and CLIENT_IP in rec.getMessage() for rec in caplog.records
    )
    assert made["token"] not in caplog.text
    assert client.get("/api/v1/me", headers=_bearer(made["token"])).status_code == 401
    services.usage.flush()
    activity = client.get(f"{T}/{made['id']}/activity").json()
    assert activity["refused"] == 2 and activity["last_refused_ip"] == CLIENT_IP
    page = client.get(f"/system-settings/api-keys/{made['id']}/activity").text
    assert 'data-stat="refused">2<' in page and "198.51.100.0/24" in page


def test_refusals_count_against_the_client_address(services: Services, world: World) -> None:
    """Outside the allowlist is a failed authentication: enough of them block the address (429 → 401 at the
    gateway), and a good token is still served."""
    settings = services.settings.model_copy(update={"auth_failures_per_minute": 3})
    svc = Services.build(settings, clock=services.clock)
    try:
        _, outside = svc.tokens.create(world.dev, "outside", [], allowed_ips=["198.51.100.0/24"])
        _, good = svc.tokens.create(world.dev, "good", [])
        with TestClient(create_app(svc, start_background=False), client=(CLIENT_IP, 50000)) as c:
            statuses = [c.get("/api/v1/me", headers=_bearer(outside)).status_code for _ in range(5)]
            assert statuses[:3] == [401, 401, 401] and statuses[-1] == 429, statuses
            assert c.get("/api/v1/me", headers=_bearer(good)).status_code == 200
    finally:
        svc.close()


def test_introspection_reports_the_allowlist(client: TestClient, csrf: str, services: Services) -> None:
    made = _create(client, csrf, allowed_ips=["198.51.100.0/24", "2001:db8::/32"])
    r = client.post("/api/v1/introspect", data={"token": made["token"]}, headers=_basic(services))
    assert r.json()["active"] is True
    assert r.json()["allowed_ips"] == ["198.51.100.0/24", "2001:db8::/32"]
    plain = _create(client, csrf, name="plain")
    assert (
        "allowed_ips"
        not in client.post("/api/v1/introspect", data={"token": plain["token"]}, headers=_basic(services)).json()
    )


def _sdk_app(services: Services) -> FastAPI:
    app = FastAPI()
    install(app, LocalVerifier(services=services))

    @app.get("/contacts")
    def contacts(request: Request) -> dict[str, Any]:
        return {"token_id": request.state.kbai.token_id}

    return app


def test_the_sdk_enforces_the_allowlist_and_the_pause(client: TestClient, csrf: str, services: Services) -> None:
    inside = _create(client, csrf, name="inside", allowed_ips=["203.0.113.0/24"])
    outside = _create(client, csrf, name="outside", allowed_ips=["198.51.100.0/24"])
    with TestClient(_sdk_app(services), client=(CLIENT_IP, 50000)) as sdk:
        assert sdk.get("/contacts", headers=_bearer(inside["token"])).status_code == 200
        r = sdk.get("/contacts", headers=_bearer(outside["token"]))
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_token"
        assert "198.51.100" not in r.text
        client.post(f"{T}/{inside['id']}/pause", headers={"X-CSRF-Token": csrf})
        r = sdk.get("/contacts", headers=_bearer(inside["token"]))
        assert r.status_code == 401 and "paused" in r.json()["error"]["message"]


# ---- self-rotation -----------------------------------------------------------------------------------
def test_self_rotation_only_with_the_option(client: TestClient, csrf: str) -> None:
    plain = _create(client, csrf, name="plain")
    r = client.post(f"{T}/self/rotate", headers=_bearer(plain["token"]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "self_rotate_not_enabled"
    # With a session it is not the route to use.
    r = client.post(f"{T}/self/rotate", headers={"X-CSRF-Token": csrf}, json={})
    assert r.status_code == 403 and r.json()["error"]["code"] == "token_required"
    # A token still never mints another any other way.
    r = client.post(T, json={"name": "x", "scopes": []}, headers=_bearer(plain["token"]))
    assert r.status_code == 403
    r = client.post(f"{T}/{plain['id']}/rotate", json={}, headers=_bearer(plain["token"]))
    assert r.status_code == 403


def test_self_rotation_keeps_name_scopes_restrictions_and_stops_the_old_after_the_grace(
    client: TestClient, csrf: str, clock: FrozenClock
) -> None:
    made = _create(
        client,
        csrf,
        name="robot",
        self_rotate=True,
        allowed_ips=["203.0.113.0/24"],
        description="CI",
        expires_in_days=30,
    )
    r = client.post(f"{T}/self/rotate", json={"grace_period_seconds": 60}, headers=_bearer(made["token"]))
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["token"] and new["token"] != made["token"]
    assert (new["name"], new["scopes"], new["allowed_ips"], new["description"], new["self_rotate"]) == (
        "robot",
        ["users.read"],
        ["203.0.113.0/24"],
        "CI",
        True,
    )
    assert new["rotated_from"]["id"] == made["id"]
    assert client.get("/api/v1/me", headers=_bearer(made["token"])).status_code == 200  # in its grace
    clock.advance(seconds=61)
    assert client.get("/api/v1/me", headers=_bearer(made["token"])).status_code == 401
    assert client.get("/api/v1/me", headers=_bearer(new["token"])).status_code == 200
    # The successor rotates itself in turn; the old one cannot rotate again.
    again = client.post(f"{T}/self/rotate", headers=_bearer(new["token"]))
    assert again.status_code == 201, again.text


def test_self_rotation_follows_the_tenant_policy(
    client: TestClient, csrf: str, services: Services, world: World
) -> None:
    made = _create(client, csrf, name="robot", self_rotate=True)  # no expiry
    services.policies.set(world.admin, world.tenant_id, max_lifetime_days=30)
    r = client.post(f"{T}/self/rotate", headers=_bearer(made["token"]))
    assert r.status_code == 201, r.text
    assert r.json()["expires_at"] is not None


def test_a_rotated_out_token_used_again_is_logged_and_notified_once_not_revoked_further(
    client: TestClient, csrf: str, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    made = _create(client, csrf, name="robot", self_rotate=True)
    new = client.post(f"{T}/self/rotate", headers=_bearer(made["token"])).json()
    with caplog.at_level(logging.WARNING, logger="kbai.tokens"):
        for _ in range(3):
            assert client.get("/auth/check", headers=_bearer(made["token"])).status_code == 401
    assert sum("used again" in rec.getMessage() for rec in caplog.records) == 3
    assert made["token"] not in caplog.text
    with services.db.read() as s:
        notes = list(s.scalars(select(Notification).where(Notification.kind == "token.reused_after_rotation")))
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "token.reuse_after_rotation")))
    assert len(notes) == 1 and len(events) == 1
    assert made["prefix"] in notes[0].title and CLIENT_IP in notes[0].body
    # Nothing else was revoked: the successor keeps working.
    assert client.get("/api/v1/me", headers=_bearer(new["token"])).status_code == 200
