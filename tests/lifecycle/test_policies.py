"""Tenant policies: maximum lifetime and "expiration required" enforced on create and rotate with 422s
that name the rule; readable by every member, changed with roles.manage, audited; `kbai policy set`."""

from __future__ import annotations

import subprocess
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from kbai.clock import FrozenClock
from kbai.store.models import AuditEvent
from tests.conftest import KBAI_BIN, OPERATOR, World, server_env
from tests.lifecycle.conftest import login
from tests.tokens.helpers import raises_code


def _put(client: TestClient, csrf: str, **body: object):
    return client.put("/api/v1/policies", headers={"X-CSRF-Token": csrf}, json=body)


def test_the_policy_refuses_a_365_day_token(world: World, client: TestClient, clock: FrozenClock) -> None:
    admin_csrf = login(client, "admin@acme.test", "admin-password-1")
    r = _put(client, admin_csrf, max_lifetime_days=90)
    assert r.status_code == 200, r.text
    assert r.json()["max_lifetime_days"] == 90 and r.json()["webhook_secret"] is None
    csrf = login(client, "dev@acme.test", "dev-password-1")
    headers = {"X-CSRF-Token": csrf}
    r = client.post(
        "/api/v1/tokens", headers=headers, json={"name": "too long", "scopes": ["users.read"], "expires_in_days": 365}
    )
    assert r.status_code == 422
    assert r.json()["error"] == {
        "code": "policy_max_lifetime",
        "message": "Your organisation allows tokens of at most 90 days.",
    }
    r = client.post("/api/v1/tokens", headers=headers, json={"name": "forever", "scopes": ["users.read"]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "policy_expiration_required"
    assert "at most 90 days away" in r.json()["error"]["message"]
    # 90 days is fine, and so is a date 90 days away (a date means "through that day").
    assert (
        client.post(
            "/api/v1/tokens", headers=headers, json={"name": "ok", "scopes": ["users.read"], "expires_in_days": 90}
        ).status_code
        == 201
    )
    day = (clock.now() + timedelta(days=90)).date().isoformat()
    assert (
        client.post(
            "/api/v1/tokens", headers=headers, json={"name": "by date", "scopes": ["users.read"], "expires_at": day}
        ).status_code
        == 201
    )
    late = (clock.now() + timedelta(days=91)).date().isoformat()
    r = client.post(
        "/api/v1/tokens", headers=headers, json={"name": "late", "scopes": ["users.read"], "expires_at": late}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "policy_max_lifetime"
    # Nothing was created by the refused requests.
    names = {t["name"] for t in client.get("/api/v1/tokens").json()["tokens"]}
    assert names == {"ok", "by date"}


def test_expiration_required_and_rotation_under_a_newer_policy(world: World, clock: FrozenClock) -> None:
    svc = world.services
    forever, _ = svc.tokens.create(world.dev, "forever", ["users.read"])
    year, _ = svc.tokens.create(world.dev, "a year", ["users.read"], expires_in_days=365)
    svc.policies.set(world.admin, world.tenant_id, expiration_required=True)
    with raises_code("policy_expiration_required"):
        svc.tokens.create(world.dev, "another forever", ["users.read"])
    svc.tokens.create(world.dev, "ten years", ["users.read"], expires_in_days=3650)  # any expiry will do
    with raises_code("policy_expiration_required") as info:
        svc.tokens.rotate(world.dev, forever.id)
    assert "expires_in_days" in info.value.message
    svc.policies.set(world.admin, world.tenant_id, max_lifetime_days=90)
    with raises_code("policy_max_lifetime") as info:
        svc.tokens.rotate(world.dev, year.id)
    assert info.value.message.startswith("Your organisation allows tokens of at most 90 days.")
    assert svc.tokens.get(world.dev, year.id).status == "active"  # the refused rotation changed nothing
    new, _, _ = svc.tokens.rotate(world.dev, year.id, expires_in_days=90)
    assert new.expires_at == clock.now() + timedelta(days=90)
    # Removing the rules lets the old lifetimes through again.
    svc.policies.set(world.admin, world.tenant_id, max_lifetime_days=None, expiration_required=False)
    svc.tokens.rotate(world.dev, forever.id)


def test_every_member_reads_the_policy_only_role_managers_change_it(world: World, client: TestClient) -> None:
    svc = world.services
    svc.policies.set(OPERATOR, world.tenant_id, max_lifetime_days=30, webhook_url="https://hooks.acme.test/kbai")
    csrf = login(client, "dev@acme.test", "dev-password-1")
    r = client.get("/api/v1/policies")
    assert r.status_code == 200
    assert r.json() == {
        "max_lifetime_days": 30,
        "expiration_required": False,
        "auto_revoke_unused_days": None,
        "webhook_configured": True,
        "webhook_url": None,
        "require_allowlist": False,
        "updated_at": r.json()["updated_at"],
    }
    r = _put(client, csrf, max_lifetime_days=365)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert "roles.manage" in r.json()["error"]["message"]
    admin_csrf = login(client, "admin@acme.test", "admin-password-1")
    assert client.get("/api/v1/policies").json()["webhook_url"] == "https://hooks.acme.test/kbai"
    for bad in (
        {"max_lifetime_days": 0},
        {"max_lifetime_days": 3651},
        {"max_lifetime_days": "90"},
        {"auto_revoke_unused_days": -1},
        {"expiration_required": "yes"},
        {"webhook_url": "ftp://x.test/"},
        {"webhook_url": "https://"},
        {"webhook_url": "javascript:alert(1)"},
        {"surprise": 1},
    ):
        r = _put(client, admin_csrf, **bad)
        assert r.status_code == 422, (bad, r.text)
        assert set(r.json()["error"]) == {"code", "message"}
    assert svc.policies.get(world.tenant_id).max_lifetime_days == 30  # unchanged by any of them
    r = _put(client, admin_csrf, auto_revoke_unused_days=60, max_lifetime_days=None)
    assert r.status_code == 200
    assert r.json()["auto_revoke_unused_days"] == 60 and r.json()["max_lifetime_days"] is None
    r = _put(client, admin_csrf, new_webhook_secret=True)
    assert r.json()["webhook_secret"].startswith("whsec_")
    with svc.db.read() as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action == "policy.update").order_by(AuditEvent.id)))
    assert [e.actor for e in events] == ["operator", "user:admin@acme.test", "user:admin@acme.test"]
    assert events[1].details["changes"] == {
        "max_lifetime_days": {"from": 30, "to": None},
        "auto_revoke_unused_days": {"from": None, "to": 60},
    }
    assert "whsec_" not in str([e.details for e in events])  # the secret itself is never recorded


def test_kbai_policy_set(world: World, database_url: str) -> None:
    env = server_env(database_url)

    def kbai(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([KBAI_BIN, "policy", *args], env=env, capture_output=True, text=True, timeout=60)

    done = kbai(
        "set",
        "--tenant",
        "Acme",
        "--max-lifetime-days",
        "90",
        "--expiration-required",
        "--auto-revoke-unused-days",
        "120",
        "--webhook-url",
        "https://hooks.acme.test/kbai",
    )
    assert done.returncode == 0, done.stderr
    assert "max lifetime 90 days, expiration required: yes, auto-revoke unused: 120 days" in done.stdout
    assert "webhook secret: whsec_" in done.stdout
    policy = world.services.policies.get(world.tenant_id)
    assert (policy.max_lifetime_days, policy.expiration_required, policy.auto_revoke_unused_days) == (90, True, 120)
    done = kbai("set", "--tenant", "Acme", "--max-lifetime-days", "0", "--no-expiration-required")
    assert done.returncode == 0 and "webhook secret" not in done.stdout  # the secret is shown only when new
    assert world.services.policies.get(world.tenant_id).max_lifetime_days is None
    for args in (
        ("set", "--tenant", "Nope", "--max-lifetime-days", "9"),
        ("set", "--tenant", "Acme", "--max-lifetime-days", "-3"),
        ("set", "--tenant", "Acme", "--webhook-url", "not a url"),
    ):
        done = kbai(*args)
        assert done.returncode == 1 and done.stderr.startswith("error: "), (args, done.stderr)
        assert "Traceback" not in done.stderr
