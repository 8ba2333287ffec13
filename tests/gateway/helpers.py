"""Helpers for tests that talk to a real `kbai serve` over HTTP (also used by tests/web and tests/e2e).

Tokens are secrets even in tests: nothing here puts a plaintext token in an assertion expression,
an exception message or a repr, so a failing test never prints one.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

from kbai.config import Settings
from kbai.services import Services
from tests.conftest import FAST_ARGON2, KBAI_BIN, OPERATOR, build_world, server_env

DEV_EMAIL = "dev@acme.test"
DEV_PASSWORD = "dev-password-1"
ADMIN_EMAIL = "admin@acme.test"
ADMIN_PASSWORD = "admin-password-1"


@dataclass(frozen=True)
class Seeded:
    """Ids of the tenant and users that ``tests.conftest.build_world`` creates."""

    tenant_id: int
    admin_id: int
    dev_id: int
    dev_role_id: int


def seed(
    database_url: str, permissions_file: Path | None = None, extra_dev_permissions: tuple[str, ...] = ()
) -> Seeded:
    """Acme with admin@acme.test (Admin) and dev@acme.test (Developers: manage tokens, users.read, roles.read,
    plus ``extra_dev_permissions``, which may come from ``permissions_file``)."""
    svc = Services.build(Settings(database_url=database_url, permissions_file=permissions_file, **FAST_ARGON2))
    try:
        world = build_world(svc)
        if extra_dev_permissions:
            role = svc.access.get_role(OPERATOR, world.dev_role_id)
            svc.access.update_role(OPERATOR, world.dev_role_id, [*role.permissions, *extra_dev_permissions])
        assert world.admin.user_id is not None and world.dev.user_id is not None
        return Seeded(world.tenant_id, world.admin.user_id, world.dev.user_id, world.dev_role_id)
    finally:
        svc.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(client: httpx.Client, email: str = DEV_EMAIL, password: str = DEV_PASSWORD) -> str:
    """Log ``client`` in (it keeps the cookie); returns the CSRF token."""
    r = client.post("/api/v1/session", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    assert "kbai_session" in client.cookies
    return str(r.json()["csrf_token"])


@dataclass(frozen=True)
class Created:
    """A token as POST /api/v1/tokens returned it. ``repr`` hides the plaintext."""

    json: dict[str, object]
    plaintext: str

    @property
    def id(self) -> int:
        return int(self.json["id"])  # type: ignore[call-overload]

    def __repr__(self) -> str:
        return f"Created(id={self.json.get('id')}, prefix={self.json.get('prefix')!r})"


def create_token(client: httpx.Client, csrf: str, name: str, scopes: list[str], **extra: object) -> Created:
    r = client.post("/api/v1/tokens", json={"name": name, "scopes": scopes, **extra}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    body = r.json()
    plaintext = body.pop("token")
    return Created(body, plaintext)


def listed(client: httpx.Client) -> dict[int, dict[str, object]]:
    """GET /api/v1/tokens (a session client) keyed by id."""
    r = client.get("/api/v1/tokens")
    assert r.status_code == 200, r.text
    return {int(t["id"]): t for t in r.json()["tokens"]}


def create_service_credential(database_url: str, name: str) -> tuple[str, str]:
    """`kbai service-credential create NAME` through the real CLI; returns (client_id, client_secret)."""
    proc = subprocess.run(
        [KBAI_BIN, "service-credential", "create", name],
        env=server_env(database_url),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.getcwd(),
    )
    assert proc.returncode == 0, proc.stderr
    values: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, sep, rest = line.partition(":")
        if sep and key.strip() in ("client_id", "client_secret"):
            values[key.strip()] = rest.split()[0]
    assert set(values) == {"client_id", "client_secret"}, "the CLI did not print a client_id and client_secret"
    return values["client_id"], values["client_secret"]
