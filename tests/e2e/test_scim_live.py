"""SCIM against real `kbai serve` processes: the scim2-tester compliance checks on both backends, and the
Okta / Entra ID request sequences over two instances (PostgreSQL + Redis), where only the invalidation
channel can explain instance B refusing a token within a second of a change made through instance A."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from scim2_client.client import BaseSyncSCIMClient
from scim2_tester import Status, check_server

from kbai.services import Services
from kbai.store.audit import Actor
from tests.conftest import KBAI_BIN, REDIS_URL, LiveServer, build_world, server_env, start_server

OPERATOR = Actor.operator()
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"


class HttpxScimClient(BaseSyncSCIMClient):
    """scim2-client over the project's httpx (its bundled engine wants httpx2, which kbai does not use)."""

    def __init__(self, client: httpx.Client, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = client

    def _stays_under_base_url(self, endpoint: str) -> bool:
        url = self.client.build_request("GET", endpoint).url
        base = self.client.base_url
        return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port) and url.raw_path.startswith(
            base.raw_path
        )

    def _parse_json(self, response: Any) -> Any:
        return response.json()

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        return self.client.request(method, url, **kwargs)


def _scim_token(database_url: str, tenant: str) -> str:
    """`kbai scim-token create --tenant NAME`: the secret is alone on the last line."""
    out = subprocess.run(
        [KBAI_BIN, "scim-token", "create", "--tenant", tenant],
        env=server_env(database_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def test_scim2_tester_reports_no_failed_check(services: Services, live_server: LiveServer) -> None:
    build_world(services)
    secret = _scim_token(live_server.env["KBAI_DATABASE_URL"], "Acme")
    with httpx.Client(
        base_url=live_server.url + "/scim/v2", timeout=30, headers={"Authorization": f"Bearer {secret}"}
    ) as http:
        results = check_server(HttpxScimClient(http))
    lines = [f"{r.status.name:8} {r.resource_type or '-':6} {r.title}: {(r.reason or '')[:200]}" for r in results]
    print("scim2-tester output:\n" + "\n".join(lines))  # kept in the test log (-rA / on failure)
    failed = [line for r, line in zip(results, lines, strict=True) if r.status not in (Status.SUCCESS, Status.SKIPPED)]
    assert len(results) > 100, "the checker ran its resource checks (it found Users and Groups)"
    assert {r.resource_type for r in results} >= {"User", "Group"}
    assert not failed, "\n".join(failed)


# ---- Okta and Entra ID over two instances -----------------------------------------------------------
def _within(seconds: float, check) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, f"not seen within {seconds} s"
        time.sleep(0.01)
    return time.monotonic() - start


@pytest.fixture
def pair(
    services: Services, database_url: str, tmp_path: Path, redis_prefix: str
) -> Iterator[tuple[LiveServer, LiveServer]]:
    build_world(services)
    env = {"KBAI_REDIS_URL": REDIS_URL, "KBAI_REDIS_PREFIX": redis_prefix, "KBAI_CACHE_MAX_AGE_SECONDS": "600"}
    a = start_server(database_url, tmp_path, **env)
    try:
        b = start_server(database_url, tmp_path, **env)
    except Exception:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()


def _token(url: str, email: str, password: str, scopes: list[str]) -> str:
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/api/v1/session", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        r = c.post(
            "/api/v1/tokens",
            json={"name": f"for {email}", "scopes": scopes},
            headers={"X-CSRF-Token": r.json()["csrf_token"]},
        )
        assert r.status_code == 201, r.text
        return str(r.json()["token"])


@pytest.mark.parametrize("backend", ["postgres"])
def test_okta_deactivation_through_a_stops_the_token_on_b_within_one_second(
    services: Services, pair: tuple[LiveServer, LiveServer]
) -> None:
    a, b = pair
    _, secret = services.provisioning.create(OPERATOR, build_tenant_id(services), "Okta")
    scim = httpx.Client(
        base_url=a.url + "/scim/v2",
        timeout=30,
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/scim+json"},
    )
    # Okta: create, then look the user up by userName before every change.
    r = scim.post(
        "/Users",
        json={
            "schemas": [USER],
            "userName": "okta.person@acme.test",
            "active": True,
            "name": {"givenName": "Okta", "familyName": "Person"},
            "emails": [{"primary": True, "value": "okta.person@acme.test", "type": "work"}],
        },
    )
    assert r.status_code == 201, r.text
    user_id = int(r.json()["id"])
    services.access.set_user_roles(OPERATOR, user_id, ["Developers"])
    services.access.set_password(OPERATOR, user_id, "okta-person-password")
    token = _token(a.url, "okta.person@acme.test", "okta-person-password", ["users.read"])
    auth = {"Authorization": f"Bearer {token}"}
    found = scim.get("/Users", params={"filter": 'userName eq "okta.person@acme.test"', "startIndex": 1, "count": 100})
    assert found.json()["totalResults"] == 1 and found.json()["Resources"][0]["id"] == str(user_id)
    with httpx.Client(base_url=b.url, timeout=10) as on_b:
        for _ in range(3):  # warm B's cache
            assert on_b.get("/auth/check", headers=auth).status_code == 200
        r = scim.patch(
            f"/Users/{user_id}",
            json={"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": False}}]},
        )
        assert r.status_code == 200 and r.json()["active"] is False, r.text
        _within(1.0, lambda: on_b.get("/auth/check", headers=auth).status_code == 401)
        # Okta's reactivation: the stopped (never revoked) token works again, on B too.
        r = scim.patch(
            f"/Users/{user_id}",
            json={"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": "True"}]},
        )
        assert r.status_code == 200 and r.json()["active"] is True, r.text
        _within(1.0, lambda: on_b.get("/auth/check", headers=auth).status_code == 200)
        assert scim.delete(f"/Users/{user_id}").status_code == 204
        _within(1.0, lambda: on_b.get("/auth/check", headers=auth).status_code == 401)
    scim.close()


@pytest.mark.parametrize("backend", ["postgres"])
def test_entra_group_removal_through_a_cuts_the_scope_on_b_within_one_second(
    services: Services, pair: tuple[LiveServer, LiveServer]
) -> None:
    a, b = pair
    _, secret = services.provisioning.create(OPERATOR, build_tenant_id(services), "Entra ID")
    scim = httpx.Client(
        base_url=a.url + "/scim/v2",
        timeout=30,
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/scim+json"},
    )
    token = _token(a.url, "dev@acme.test", "dev-password-1", ["users.read", "roles.read"])
    auth = {"Authorization": f"Bearer {token}"}
    # Entra: find the group by displayName, the user by userName, then PATCH with capitalised ops.
    (group,) = scim.get(
        "/Groups", params={"filter": 'displayName eq "Developers"', "excludedAttributes": "members"}
    ).json()["Resources"]
    assert "members" not in group
    (dev,) = scim.get("/Users", params={"filter": 'userName eq "dev@acme.test"'}).json()["Resources"]
    r = scim.post(
        "/Groups",
        json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "Readers",
            "externalId": "entra-1234",
        },
    )
    assert r.status_code == 201, r.text
    readers = r.json()
    services.access.update_role(OPERATOR, int(readers["id"]), ["users.read"])
    r = scim.patch(
        f"/Groups/{readers['id']}",
        json={"schemas": [PATCH], "Operations": [{"op": "Add", "path": "members", "value": [{"value": dev["id"]}]}]},
    )
    assert r.status_code == 200, r.text
    with httpx.Client(base_url=b.url, timeout=10) as on_b:
        assert on_b.get("/auth/check", params={"scope": "roles.read"}, headers=auth).status_code == 200
        r = scim.patch(
            f"/Groups/{group['id']}",
            json={"schemas": [PATCH], "Operations": [{"op": "Remove", "path": f'members[value eq "{dev["id"]}"]'}]},
        )
        assert r.status_code == 200, r.text
        _within(1.0, lambda: on_b.get("/auth/check", params={"scope": "roles.read"}, headers=auth).status_code == 403)
        assert on_b.get("/auth/check", params={"scope": "users.read"}, headers=auth).status_code == 200
        assert on_b.get("/api/v1/me", headers=auth).json()["scopes"] == ["users.read"]
        # Entra deletes a user with PATCH active false first, then DELETE.
        r = scim.patch(
            f"/Users/{dev['id']}",
            json={"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]},
        )
        assert r.status_code == 200 and r.json()["active"] is False, r.text
        _within(1.0, lambda: on_b.get("/auth/check", headers=auth).status_code == 401)
        assert scim.delete(f"/Users/{dev['id']}").status_code == 204
        assert scim.get(f"/Users/{dev['id']}").status_code == 404
    scim.close()


def build_tenant_id(services: Services) -> int:
    tenant = services.access.tenant_by_name("Acme")
    assert tenant is not None
    return tenant.id
