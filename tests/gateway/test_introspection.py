"""Issue 3: a real RFC 7662 client (Authlib) validates kbai tokens against /api/v1/introspect.

The service credential comes from the real CLI (`kbai service-credential create NAME`), the
server is a real `kbai serve` on SQLite and PostgreSQL, and the client is Authlib's httpx
OAuth2Client with client_secret_basic, as a resource server would use it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client

from tests.conftest import LiveServer, start_server
from tests.gateway.helpers import Created, Seeded, create_service_credential, create_token, login, seed


@dataclass(frozen=True)
class Stack:
    """One server and service credential per backend; each test makes its own token."""

    server: LiveServer
    seeded: Seeded
    client_id: str
    client_secret: str = field(repr=False)


class Env:
    def __init__(self, stack: Stack, session: httpx.Client, csrf: str, token: Created) -> None:
        self.server = stack.server
        self.seeded = stack.seeded
        self.client_id = stack.client_id
        self.client_secret = stack.client_secret
        self.session = session
        self.csrf = csrf
        self.token = token

    @property
    def url(self) -> str:
        return self.server.url + "/api/v1/introspect"

    def introspect(self, token: str, secret: str | None = None) -> httpx.Response:
        with OAuth2Client(
            self.client_id,
            secret if secret is not None else self.client_secret,
            token_endpoint_auth_method="client_secret_basic",
            timeout=30,
        ) as client:
            return client.introspect_token(self.url, token=token)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def stack(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    seeded = seed(module_database_url)
    client_id, client_secret = create_service_credential(module_database_url, "contacts-api")
    server = start_server(module_database_url, tmp_path_factory.mktemp("introspect"))
    yield Stack(server, seeded, client_id, client_secret)
    server.stop()


@pytest.fixture
def env(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Env]:
    with stack.server.client() as session:
        csrf = login(session)
        token = create_token(session, csrf, request.node.name[:100], ["users.read", "roles.read"], expires_in_days=30)
        yield Env(stack, session, csrf, token)


def test_active_token(env: Env) -> None:
    before = int(time.time())
    r = env.introspect(env.token.plaintext)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["active"] is True
    assert body["scope"].split(" ") == ["users.read", "roles.read"]
    assert body["sub"] == str(env.seeded.dev_id)
    assert body["username"] == "dev@acme.test"
    assert body["tenant"] == str(env.seeded.tenant_id)
    assert body["token_id"] == env.token.id
    assert body["token_type"] == "Bearer"
    assert body["client_id"] == env.client_id
    assert isinstance(body["exp"], int) and isinstance(body["iat"], int)
    assert body["exp"] - body["iat"] == 30 * 86400
    assert body["iat"] <= before + 1
    leaked = env.token.plaintext in r.text
    assert not leaked, "the introspection response contains the token"


def test_revoked_unknown_and_malformed_are_exactly_inactive(env: Env) -> None:
    r = env.session.post(f"/api/v1/tokens/{env.token.id}/revoke", headers={"X-CSRF-Token": env.csrf})
    assert r.status_code == 200
    presented = {
        "revoked": env.token.plaintext,
        "unknown": "kbai_pk_" + "0" * 64,
        "malformed": "kbai_pk_nothex",
        "upper case": env.token.plaintext.upper(),
    }
    for what, token in presented.items():
        r = env.introspect(token)
        assert r.status_code == 200, f"{what}: {r.status_code} {r.text}"
        assert r.json() == {"active": False}, f"{what}: {r.text}"


def test_wrong_client_secret_is_401(env: Env) -> None:
    r = env.introspect(env.token.plaintext, secret=env.client_secret + "x")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_client"
    assert r.headers["www-authenticate"].startswith("Basic")
    assert "active" not in r.json()

    # No credential at all, and an unknown client id, are refused the same way.
    r = httpx.post(env.url, data={"token": env.token.plaintext}, timeout=30)
    assert r.status_code == 401
    r = httpx.post(
        env.url, data={"token": env.token.plaintext}, auth=("kbai_sc_0000000000000000", env.client_secret), timeout=30
    )
    assert r.status_code == 401


def test_json_and_form_bodies(env: Env) -> None:
    auth = (env.client_id, env.client_secret)
    r = httpx.post(env.url, json={"token": env.token.plaintext}, auth=auth, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["active"] is True
    assert r.json()["token_id"] == env.token.id

    r = httpx.post(
        env.url, data={"token": env.token.plaintext, "token_type_hint": "access_token"}, auth=auth, timeout=30
    )
    assert r.status_code == 200, r.text
    assert r.json()["active"] is True
    assert r.json()["sub"] == str(env.seeded.dev_id)

    r = httpx.post(env.url, json={"token": "kbai_pk_" + "f" * 64}, auth=auth, timeout=30)
    assert r.status_code == 200
    assert r.json() == {"active": False}

    # A request without the token parameter is the caller's mistake, not an inactive token.
    r = httpx.post(env.url, json={}, auth=auth, timeout=30)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "bad_request"


def test_finding15_failed_client_authentication_is_rate_limited_per_address(database_url: str, tmp_path: Path) -> None:
    """Issue 13, finding 15: wrong, unknown or garbled client credentials count per client address; past
    the limit that address gets 429 with Retry-After (even with the right secret), others are served."""
    seed(database_url)
    client_id, secret = create_service_credential(database_url, "contacts-api")
    server = start_server(database_url, tmp_path, KBAI_INTROSPECTION_FAILURES_PER_MINUTE="3")
    token = "kbai_pk_" + "f" * 64

    def ask(ip: str, **kwargs: object) -> httpx.Response:
        return httpx.post(
            server.url + "/api/v1/introspect",
            data={"token": token},
            timeout=30,
            headers={"X-Forwarded-For": ip, **kwargs.pop("headers", {})},
            **kwargs,
        )  # type: ignore[arg-type]

    try:
        for _ in range(5):  # successes never count
            assert ask("203.0.113.60", auth=(client_id, secret)).status_code == 200
        assert ask("203.0.113.60", auth=(client_id, secret + "x")).status_code == 401
        assert ask("203.0.113.60", auth=("kbai_sc_0000000000000000", secret)).status_code == 401
        assert ask("203.0.113.60", headers={"Authorization": "Basic !!!"}).status_code == 401
        for attempt in (dict(auth=(client_id, secret + "y")), dict(auth=(client_id, secret))):
            r = ask("203.0.113.60", **attempt)
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == "rate_limited" and "from your address" in r.json()["error"]["message"]
            assert 1 <= int(r.headers["retry-after"]) <= 60
            assert "active" not in r.json()
        assert ask("203.0.113.61", auth=(client_id, secret)).json() == {"active": False}  # only that address
    finally:
        server.stop()
