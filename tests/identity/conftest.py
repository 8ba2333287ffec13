"""Fixtures of the identity tests: a real OpenID provider (oidc-provider on Node) per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import missing_service
from tests.identity.provider import OidcProvider, make_key, provider_missing


@pytest.fixture(scope="session")
def provider_keys() -> list[dict[str, object]]:
    """Three RSA signing keys, made once per run (2048-bit keys take a moment each)."""
    return [make_key(f"key-{n}") for n in (1, 2, 3)]


@pytest.fixture
def oidc_provider(tmp_path: Path, provider_keys: list[dict[str, object]]) -> Iterator[OidcProvider]:
    """A running provider signing with key-1 and publishing key-1 and key-2 (stopped afterwards).
    Fails instead of skipping when KBAI_REQUIRE_SERVICES=1 and Node or the package is missing."""
    why = provider_missing()
    if why:
        missing_service(why)
    provider = OidcProvider(tmp_path / "provider", keys=list(provider_keys[:2]))
    provider.start()
    yield provider
    provider.stop()


# ---- kbai in-process, signing in through the provider ----------------------------------------------
import threading  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from kbai.app import create_app  # noqa: E402
from kbai.config import Settings  # noqa: E402
from kbai.services import Services  # noqa: E402
from tests.conftest import FAST_ARGON2, OPERATOR  # noqa: E402
from tests.identity.provider import CLIENT_ID, CLIENT_SECRET, login_at_provider  # noqa: E402

DEV_PERMISSIONS = ["developer.manage_tokens", "users.read", "roles.read"]


class OffsetClock:
    """The real time, plus an offset a test may move forward (ID tokens carry the real time)."""

    def __init__(self) -> None:
        self.offset = timedelta()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        with self._lock:
            self.offset += timedelta(**delta)


@dataclass
class Rig:
    """kbai (in-process) wired to a running provider; tenant Acme has external id ``org-acme``."""

    svc: Services
    provider: OidcProvider
    clock: OffsetClock
    tenant_id: int
    dev_role_id: int
    app: object

    def client(self) -> TestClient:
        return TestClient(self.app, raise_server_exceptions=False, follow_redirects=False)  # type: ignore[arg-type]

    def start(self, client: httpx.Client, next_path: str | None = None) -> str:
        r = client.get("/oidc/login", params={"next": next_path} if next_path else None)
        assert r.status_code == 303, r.text[:500]
        return r.headers["location"]

    def callback_for(self, client: httpx.Client, login: str, password: str = "pw", next_path: str | None = None) -> str:
        """Start a sign-in in ``client`` and log in at the provider; the callback path it sends back."""
        return login_at_provider(self.start(client, next_path), login, password).path_and_query

    def sign_in(
        self, client: httpx.Client, login: str, password: str = "pw", next_path: str | None = None
    ) -> httpx.Response:
        return client.get(self.callback_for(client, login, password, next_path))


def make_rig(database_url: str, provider: OidcProvider, **settings: object) -> Rig:
    clock = OffsetClock()
    values = {
        "oidc_issuer": provider.issuer,
        "oidc_client_id": CLIENT_ID,
        "oidc_client_secret": CLIENT_SECRET,
        "oidc_provider_name": "Test Identity",
        "oidc_scopes": "org",
        **FAST_ARGON2,
        **settings,
    }
    svc = Services.build(Settings(database_url=database_url, **values), clock=clock)  # type: ignore[arg-type]
    tenant, _admin, _ = svc.access.create_tenant(
        OPERATOR, "Acme", "admin@acme.test", "admin-password-1", external_id="org-acme"
    )
    role = svc.access.create_role(OPERATOR, tenant.id, "Developers", DEV_PERMISSIONS)
    svc.access.create_role(OPERATOR, tenant.id, "Readers", ["users.read"])
    provider.add_client("http://testserver/oidc/callback")
    return Rig(svc, provider, clock, tenant.id, role.id, create_app(svc, start_background=False))


@pytest.fixture
def rig(database_url: str, oidc_provider: OidcProvider) -> Iterator[Rig]:
    made = make_rig(database_url, oidc_provider)
    yield made
    made.svc.close()
