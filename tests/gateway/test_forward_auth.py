"""GET /auth/check as nginx, Traefik and Envoy call it, against a live `kbai serve`.

nginx and Traefik send a GET to /auth/check. Envoy's HTTP ext_authz sends the client's own method,
and with `path_prefix` the client's path appended to the prefix; the answer must be the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import LiveServer, start_server
from tests.gateway.helpers import Created, Seeded, bearer, create_token, login, seed

IDENTITY = ("x-kbai-user", "x-kbai-user-email", "x-kbai-tenant", "x-kbai-scopes", "x-kbai-token-id")


@dataclass(frozen=True)
class Stack:
    server: LiveServer
    seeded: Seeded
    token: Created  # users.read


@pytest.fixture(scope="module")
def stack(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    seeded = seed(module_database_url)
    server = start_server(module_database_url, tmp_path_factory.mktemp("forward-auth"))
    try:
        with server.client() as c:
            token = create_token(c, login(c), "gateway", ["users.read"])
        yield Stack(server, seeded, token)
    finally:
        server.stop()


def check(stack: Stack, method: str, path: str = "/auth/check", token: str | None = None) -> httpx.Response:
    headers = bearer(token) if token is not None else {}
    with stack.server.client() as c:
        return c.request(method, path, headers=headers)


def assert_identity(stack: Stack, r: httpx.Response) -> None:
    assert r.status_code == 200, r.text
    assert r.headers["x-kbai-user"] == str(stack.seeded.dev_id)
    assert r.headers["x-kbai-user-email"] == "dev@acme.test"
    assert r.headers["x-kbai-tenant"] == str(stack.seeded.tenant_id)
    assert r.headers["x-kbai-scopes"] == "users.read"
    assert r.headers["x-kbai-token-id"] == str(stack.token.id)
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_any_method_gets_the_same_answer(stack: Stack, method: str) -> None:
    assert_identity(stack, check(stack, method, token=stack.token.plaintext))
    r = check(stack, method, token="kbai_pk_" + "0" * 64)
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert not any(h in r.headers for h in IDENTITY)
    r = check(stack, method)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith('Bearer realm="kbai"')


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_envoy_path_prefix_mode(stack: Stack, method: str) -> None:
    # Envoy with path_prefix: /auth/check sees /auth/check/<the client's path and query>.
    assert_identity(stack, check(stack, method, "/auth/check/orders/42?page=2", stack.token.plaintext))
    r = check(stack, method, "/auth/check/orders/42", "kbai_pk_short")
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_demanded_scopes(stack: Stack) -> None:
    r = check(stack, "GET", "/auth/check?scope=users.read", stack.token.plaintext)
    assert_identity(stack, r)
    r = check(stack, "GET", "/auth/check?scope=users.read&scope=roles.read", stack.token.plaintext)
    assert r.status_code == 403
    challenge = r.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="roles.read"' in challenge
    assert not any(h in r.headers for h in IDENTITY)
    # A scope the catalog doesn't know is simply not held.
    r = check(stack, "POST", "/auth/check?scope=contacts.read", stack.token.plaintext)
    assert r.status_code == 403


def test_only_the_get_is_in_the_api_document(stack: Stack) -> None:
    with stack.server.client() as c:
        paths = c.get("/openapi.json").json()["paths"]
    assert set(paths["/auth/check"]) == {"get"}
    assert not [p for p in paths if p.startswith("/auth/check/")]
