"""Service tokens on a real `kbai serve` process (both backends): a service token survives its creator's
deactivation, a personal token handed over at deactivation keeps working with the same plaintext and its
scopes cut to the ceiling, and one not handed over stops."""

from __future__ import annotations

from pathlib import Path

import httpx

from kbai.config import Settings
from kbai.services import Services
from tests.conftest import FAST_ARGON2, OPERATOR, build_world, start_server


def _login(base: str, email: str, password: str) -> tuple[httpx.Client, dict[str, str]]:
    client = httpx.Client(base_url=base, timeout=30)
    r = client.post("/api/v1/session", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return client, {"X-CSRF-Token": r.json()["csrf_token"]}


def test_service_token_survives_and_hand_over_keeps_the_plaintext(database_url: str, tmp_path: Path) -> None:
    svc = Services.build(Settings(database_url=database_url, **FAST_ARGON2))
    try:
        world = build_world(svc)
        role = svc.access.create_role(OPERATOR, world.tenant_id, "Automation", ["developer.manage_service_tokens"])
        dev = svc.access.user_by_email("dev@acme.test", world.tenant_id)
        assert dev is not None
        svc.access.set_user_roles(OPERATOR, dev.id, [world.dev_role_id, role.id])
    finally:
        svc.close()
    server = start_server(database_url, tmp_path)
    try:
        base = server.url
        dev_client, dev_h = _login(base, "dev@acme.test", "dev-password-1")
        body = {"name": "deploys", "scopes": ["users.read", "roles.read"]}
        service = dev_client.post("/api/v1/service-tokens", json=body, headers=dev_h).json()
        keep = dev_client.post("/api/v1/tokens", json={**body, "name": "keep"}, headers=dev_h).json()
        stop = dev_client.post("/api/v1/tokens", json={**body, "name": "stop"}, headers=dev_h).json()

        def check(token: str) -> httpx.Response:
            return httpx.get(base + "/auth/check", headers={"Authorization": f"Bearer {token}"}, timeout=30)

        for made in (service, keep, stop):  # warm the server's cache
            assert check(made["token"]).status_code == 200
        admin, admin_h = _login(base, "admin@acme.test", "admin-password-1")
        r = admin.put("/api/v1/service-tokens/ceiling", json={"permissions": ["users.read"]}, headers=admin_h)
        assert r.status_code == 200, r.text
        r = admin.post(f"/api/v1/users/{dev.id}/deactivate", json={"hand_over": [keep["id"]]}, headers=admin_h)
        assert r.status_code == 200 and r.json()["active"] is False, r.text

        survived = check(service["token"])
        assert survived.status_code == 200
        assert survived.headers["x-kbai-service-token"] == "true" and "x-kbai-user" not in survived.headers
        assert survived.headers["x-kbai-scopes"] == "users.read"  # the ceiling
        kept = check(keep["token"])  # the same plaintext as before
        assert kept.status_code == 200, kept.text
        assert kept.headers["x-kbai-service-token"] == "true" and "x-kbai-user" not in kept.headers
        assert kept.headers["x-kbai-scopes"] == "users.read"
        assert check(stop["token"]).status_code == 401
        listed = admin.get("/api/v1/service-tokens").json()["tokens"]
        assert {t["id"] for t in listed} == {service["id"], keep["id"]}
    finally:
        server.stop()
