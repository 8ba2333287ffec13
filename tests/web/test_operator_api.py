"""The operator API (service credentials with abilities) in-process, on SQLite and PostgreSQL: every route
refuses no credential (401) and a credential without the ability (403); tenants and memberships; tokens
issued on a person's behalf under exactly the session API's rules, and the limit race across both ways."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from kbai.app import create_app
from kbai.config import Settings
from kbai.services import Services
from kbai.store.audit import Actor
from kbai.store.models import AuditEvent
from tests.conftest import FAST_ARGON2, World

OPERATOR = Actor.operator()
OP = "/api/v1/operator"


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Failed authentications are what these tests send: the per-address limit has its own tests."""
    return Settings(database_url=database_url, introspection_failures_per_minute=1_000_000, **FAST_ARGON2)


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services, start_background=False), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def creds(world: World) -> dict[str, dict[str, str]]:
    out = {}
    for name, allow in (
        ("introspect-only", "introspect"),
        ("tenants", "tenants"),
        ("tokens", "tokens"),
        ("all", "introspect,tenants,tokens"),
    ):
        credential, secret = world.services.credentials.create(OPERATOR, name, allow)
        out[name] = basic(credential.client_id, secret)
    return out


def _routes(world: World) -> list[tuple[str, str, str, Any]]:
    """(ability, method, path, body) of every operator route."""
    dev = world.dev.user_id
    return [
        ("tenants", "POST", f"{OP}/tenants", {"name": "Initech", "external_id": "org_initech"}),
        ("tenants", "GET", f"{OP}/tenants?external_id=nope", None),
        ("tenants", "GET", f"{OP}/tenants/{world.tenant_id}", None),
        ("tenants", "PATCH", f"{OP}/tenants/{world.tenant_id}", {"name": "Acme Renamed"}),
        ("tenants", "POST", f"{OP}/tenants/{world.tenant_id}/memberships", {"email": "new@acme.test"}),
        ("tenants", "POST", f"{OP}/memberships/{dev}/deactivate", None),
        ("tokens", "POST", f"{OP}/memberships/{dev}/tokens", {"name": "from the product", "scopes": ["users.read"]}),
    ]


def test_every_route_refuses_no_credential_and_a_credential_without_the_ability(
    world: World, client: TestClient, creds: dict[str, dict[str, str]]
) -> None:
    from tests.web.safety import changed_tables, snapshot

    other = {"tenants": "tokens", "tokens": "tenants"}
    for ability, method, path, body in _routes(world):
        before = snapshot(world.services.db)
        for headers, status, says in (
            ({}, 401, "service credential"),
            (basic("kbai_sc_0000000000000000", "wrong"), 401, "service credential"),
            ({"Authorization": "Bearer kbai_pk_" + "0" * 64}, 401, "service credential"),
            (creds["introspect-only"], 403, f"--allow {ability}"),
            (creds[other[ability]], 403, f"--allow {ability}"),
        ):
            r = client.request(method, path, json=body, headers=headers)
            assert r.status_code == status, (method, path, r.text)
            error = r.json()["error"]
            assert error["code"] == ("invalid_client" if status == 401 else "forbidden") and says in error["message"]
        assert not changed_tables(before, snapshot(world.services.db)), (method, path)


def test_introspection_needs_the_introspect_ability(
    world: World, client: TestClient, creds: dict[str, dict[str, str]]
) -> None:
    _, token = world.services.tokens.create(world.dev, "ci", ["users.read"])
    r = client.post("/api/v1/introspect", data={"token": token}, headers=creds["introspect-only"])
    assert r.status_code == 200 and r.json()["active"] is True
    r = client.post("/api/v1/introspect", data={"token": token}, headers=creds["tenants"])
    assert r.status_code == 403 and "--allow introspect" in r.json()["error"]["message"]


def test_tenants_and_memberships(world: World, client: TestClient, creds: dict[str, dict[str, str]]) -> None:
    svc = world.services
    h = creds["tenants"]
    r = client.post(f"{OP}/tenants", json={"name": "Initech", "external_id": "org_initech"}, headers=h)
    assert r.status_code == 201, r.text
    tenant = r.json()
    assert (
        tenant["name"] == "Initech" and tenant["external_id"] == "org_initech" and tenant["max_active_tokens"] is None
    )
    assert client.post(f"{OP}/tenants", json={"name": "Initech", "external_id": "x"}, headers=h).status_code == 409
    assert client.get(f"{OP}/tenants", params={"external_id": "org_initech"}, headers=h).json()["id"] == tenant["id"]
    assert client.get(f"{OP}/tenants", params={"external_id": "nope"}, headers=h).status_code == 404
    assert client.get(f"{OP}/tenants/{tenant['id']}", headers=h).json()["name"] == "Initech"
    r = client.patch(f"{OP}/tenants/{tenant['id']}", json={"name": "Initech Ltd", "max_active_tokens": 3}, headers=h)
    assert r.status_code == 200 and r.json()["name"] == "Initech Ltd" and r.json()["max_active_tokens"] == 3
    r = client.patch(f"{OP}/tenants/{tenant['id']}", json={"reset_max_active_tokens": True}, headers=h)
    assert r.json()["max_active_tokens"] is None
    assert client.patch(f"{OP}/tenants/{tenant['id']}", json={"name": "Acme"}, headers=h).status_code == 409

    r = client.post(
        f"{OP}/tenants/{tenant['id']}/memberships",
        json={"email": "boss@initech.test", "roles": ["Admin"], "external_id": "u_1"},
        headers=h,
    )
    assert r.status_code == 201 and r.json()["roles"] == ["Admin"] and "password" not in r.text, r.text
    boss = r.json()
    r = client.post(f"{OP}/memberships/{boss['id']}/deactivate", headers=h)
    assert r.status_code == 409, "the tenant's last active admin stays"
    r = client.post(f"{OP}/tenants/{tenant['id']}/memberships", json={"email": "peon@initech.test"}, headers=h)
    peon = r.json()
    r = client.post(f"{OP}/memberships/{peon['id']}/deactivate", headers=h)
    assert r.status_code == 200 and r.json()["active"] is False
    with svc.db.read() as s:
        actors = {e.action: e.actor for e in s.scalars(select(AuditEvent).where(AuditEvent.tenant_id == tenant["id"]))}
    assert actors["tenant.create"].startswith("service:tenants (kbai_sc_")
    assert {"tenant.rename", "limit.set", "user.create", "user.deactivate"} <= set(actors)


def test_a_token_on_a_persons_behalf_follows_the_session_rules(
    world: World, client: TestClient, creds: dict[str, dict[str, str]]
) -> None:
    svc = world.services
    h = creds["tokens"]
    path = f"{OP}/memberships/{world.dev.user_id}/tokens"
    r = client.post(
        path,
        json={"name": "from the product", "scopes": ["users.read"], "expires_in_days": 30},
        headers={**h, "Idempotency-Key": "op-1"},
    )
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["token"].startswith("kbai_pk_") and made["scopes"] == ["users.read"]
    replay = client.post(
        path,
        json={"name": "from the product", "scopes": ["users.read"], "expires_in_days": 30},
        headers={**h, "Idempotency-Key": "op-1"},
    )
    assert replay.status_code == 201 and replay.json()["token"] is None and replay.json()["id"] == made["id"]
    assert svc.tokens.verify(made["token"]).authenticated
    assert [t.id for t in svc.tokens.list(world.dev.user_id)] == [made["id"]], "on the person's API Keys page"
    with svc.db.read() as s:
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "token.create"))
        assert (
            event is not None
            and event.actor.startswith("service:tokens (kbai_sc_")
            and event.actor.endswith("for user:dev@acme.test")
            and event.actor_user_id == world.dev.user_id
        )
    svc.tokens.revoke(world.dev, made["id"])  # theirs to revoke
    assert not svc.tokens.verify(made["token"]).authenticated

    session = TestClient(client.app)
    csrf = session.post("/api/v1/session", json={"email": "dev@acme.test", "password": "dev-password-1"}).json()[
        "csrf_token"
    ]

    def both(body: dict[str, Any], user_id: int = world.dev.user_id) -> tuple[Any, Any]:
        via_api = client.post(f"{OP}/memberships/{user_id}/tokens", json=body, headers=h)
        via_session = session.post("/api/v1/tokens", json=body, headers={"X-CSRF-Token": csrf})
        return via_api, via_session

    for body in (
        {"name": "x", "scopes": ["audit.read"]},  # a scope dev lacks
        {"name": "x", "scopes": ["developer.manage_tokens"]},  # session-only
        {"name": "x", "scopes": ["nope.read"]},
    ):
        via_api, via_session = both(body)
        assert via_api.status_code == via_session.status_code >= 400, (via_api.text, via_session.text)
        assert via_api.json()["error"]["code"] == via_session.json()["error"]["code"]
    # Someone without developer.manage_tokens: refused as the session API refuses them.
    member, _ = svc.access.create_user(OPERATOR, world.tenant_id, "plain@acme.test", "plain-password-1")
    r = client.post(f"{OP}/memberships/{member.id}/tokens", json={"name": "x", "scopes": []}, headers=h)
    assert r.status_code == 403 and "developer.manage_tokens" in r.json()["error"]["message"]
    # Over the limit: the same message as the session API's.
    svc.access.set_limit(OPERATOR, 1, user_email="dev@acme.test")
    assert client.post(path, json={"name": "first", "scopes": []}, headers=h).status_code == 201
    via_api, via_session = both({"name": "second", "scopes": []})
    assert via_api.status_code == via_session.status_code == 409
    assert via_api.json()["error"] == via_session.json()["error"]
    # A deactivated person gets no token either.
    svc.access.deactivate_user(OPERATOR, member.id)
    assert (
        client.post(f"{OP}/memberships/{member.id}/tokens", json={"name": "y", "scopes": []}, headers=h).status_code
        == 403
    )
    assert (
        client.post(f"{OP}/memberships/999999/tokens", json={"name": "y", "scopes": []}, headers=h).status_code == 404
    )


def test_the_limit_holds_across_the_session_api_and_the_operator_api(
    world: World, client: TestClient, creds: dict[str, dict[str, str]]
) -> None:
    svc = world.services
    svc.access.set_limit(OPERATOR, 3, user_email="dev@acme.test")
    session = TestClient(client.app)
    csrf = session.post("/api/v1/session", json={"email": "dev@acme.test", "password": "dev-password-1"}).json()[
        "csrf_token"
    ]
    outcomes: list[int] = []
    lock = threading.Lock()

    def create(i: int) -> None:
        body = {"name": f"race {i}", "scopes": []}
        c = TestClient(client.app)
        if i % 2:
            r = c.post(f"{OP}/memberships/{world.dev.user_id}/tokens", json=body, headers=creds["tokens"])
        else:
            c.cookies = session.cookies
            r = c.post("/api/v1/tokens", json=body, headers={"X-CSRF-Token": csrf})
        with lock:
            outcomes.append(r.status_code)

    runs: list[Callable[[], None]] = [lambda i=i: create(i) for i in range(10)]  # type: ignore[misc]
    threads = [threading.Thread(target=run) for run in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(outcomes) == [201] * 3 + [409] * 7
    assert len([t for t in svc.tokens.list(world.dev.user_id) if t.status == "active"]) == 3
