"""Service credentials can be listed and revoked (API and CLI): a revoked one is refused by
introspection at once; only the deployment's operators may do it (both backends)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from kbai.app import create_app
from kbai.clock import FrozenClock
from kbai.config import Settings
from kbai.services import Services
from kbai.store.models import AuditEvent
from tests.conftest import FAST_ARGON2, OPERATOR, build_world

CREDS = "/api/v1/service-credentials"


@pytest.fixture
def operated(database_url: str) -> Iterator[Services]:
    svc = Services.build(
        Settings(database_url=database_url, operator_tenant="Acme", **FAST_ARGON2), clock=FrozenClock()
    )
    yield svc
    svc.close()


def _login(client: TestClient, email: str, password: str) -> dict[str, str]:
    r = client.post("/api/v1/session", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return {"X-CSRF-Token": r.json()["csrf_token"]}


def _introspect(client: TestClient, client_id: str, secret: str) -> int:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    r = client.post(
        "/api/v1/introspect", data={"token": "kbai_pk_" + "0" * 64}, headers={"Authorization": f"Basic {basic}"}
    )
    return r.status_code


def test_an_operator_admin_lists_and_revokes_and_introspection_stops_at_once(operated: Services) -> None:
    build_world(operated)
    credential, secret = operated.credentials.create(OPERATOR, "contacts-api")
    other, _ = operated.credentials.create(OPERATOR, "billing-api")
    with TestClient(create_app(operated, start_background=False)) as client:
        csrf = _login(client, "admin@acme.test", "admin-password-1")
        r = client.get(CREDS)
        assert r.status_code == 200, r.text
        listed = r.json()["service_credentials"]
        assert [(c["client_id"], c["name"], c["status"], c["revoked_at"]) for c in listed] == [
            (credential.client_id, "contacts-api", "active", None),
            (other.client_id, "billing-api", "active", None),
        ]
        assert secret not in r.text
        assert _introspect(client, credential.client_id, secret) == 200

        r = client.post(f"{CREDS}/{credential.client_id}/revoke", headers=csrf)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "revoked" and r.json()["revoked_at"]
        assert _introspect(client, credential.client_id, secret) == 401, "refused at once"
        again = client.post(f"{CREDS}/{credential.client_id}/revoke", headers=csrf)
        assert again.status_code == 200 and again.json() == r.json(), "idempotent"
        statuses = {c["client_id"]: c["status"] for c in client.get(CREDS).json()["service_credentials"]}
        assert statuses == {credential.client_id: "revoked", other.client_id: "active"}
    with operated.db.read() as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "service_credential.revoke")))
    assert len(events) == 1 and events[0].actor == "user:admin@acme.test"


def test_nobody_but_the_operator_tenants_admins_may_list_or_revoke(operated: Services, database_url: str) -> None:
    world = build_world(operated)
    build_world(operated, tenant="Globex", domain="globex.test")
    credential, secret = operated.credentials.create(OPERATOR, "contacts-api")
    _view, token = operated.tokens.create(world.dev, "reader", ["users.read"])
    with TestClient(create_app(operated, start_background=False)) as client:
        attempts = {}
        for who, email, password in (
            ("globex admin", "admin@globex.test", "admin-password-1"),
            ("acme developer", "dev@acme.test", "dev-password-1"),
        ):
            client.cookies.clear()
            csrf = _login(client, email, password)
            attempts[who] = (client.get(CREDS), client.post(f"{CREDS}/{credential.client_id}/revoke", headers=csrf))
        client.cookies.clear()
        bearer = {"Authorization": f"Bearer {token}"}
        attempts["a token"] = (
            client.get(CREDS, headers=bearer),
            client.post(f"{CREDS}/{credential.client_id}/revoke", headers=bearer),
        )
        for who, responses in attempts.items():
            for r in responses:
                assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden"), (who, r.text)
                assert credential.client_id not in r.text
        assert _introspect(client, credential.client_id, secret) == 200, "nothing was revoked"

    # Without KBAI_OPERATOR_TENANT even the admins of every tenant are refused: only the CLI manages them.
    plain = Services.build(Settings(database_url=database_url, **FAST_ARGON2), clock=FrozenClock())
    try:
        with TestClient(create_app(plain, start_background=False)) as client:
            _login(client, "admin@acme.test", "admin-password-1")
            r = client.get(CREDS)
            assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
            assert "KBAI_OPERATOR_TENANT" in r.json()["error"]["message"]
    finally:
        plain.close()
