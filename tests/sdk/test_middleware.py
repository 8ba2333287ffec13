"""KbaiAuthMiddleware and require_scopes in-process, with a fake verifier: who gets through, and with what answer."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from kbai import errors
from kbai.errors import KbaiError
from kbai.sdk import Failure, Identity, KbaiAuthMiddleware, install, require_scopes
from kbai.sdk.verifiers import UNAVAILABLE

GOOD = "kbai_pk_" + "a" * 64
READER = "kbai_pk_" + "b" * 64
DOWN = "kbai_pk_" + "c" * 64
REVOKED = "kbai_pk_" + "d" * 64


def identity(*scopes: str, token_id: int = 7) -> Identity:
    return Identity(user_id=3, email="dev@acme.test", tenant_id=1, scopes=frozenset(scopes), token_id=token_id)


class FakeVerifier:
    def __init__(self) -> None:
        self.answers = {
            GOOD: identity("contacts.read", "contacts.write", token_id=1),
            READER: identity("contacts.read", token_id=2),
            DOWN: Failure(KbaiError(UNAVAILABLE)),
            REVOKED: Failure(errors.for_outcome("revoked")),
        }
        self.asked: list[str] = []
        self.used: list[int] = []
        self.events: list[str] = []

    async def verify(self, token: str) -> Identity | Failure:
        self.asked.append(token)
        return self.answers.get(token, Failure(errors.for_outcome("malformed" if len(token) != 72 else "unknown")))

    def record_use(self, who: Identity) -> None:
        self.used.append(who.token_id)

    async def start(self) -> None:
        self.events.append("start")

    async def stop(self) -> None:
        self.events.append("stop")


def make_app(verifier: FakeVerifier, *, middleware: bool = True) -> tuple[FastAPI, list[str]]:
    app = FastAPI()
    install(app, verifier, exempt_paths=("/healthz", "/public/*"), middleware=middleware)
    ran: list[str] = []

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        ran.append("healthz")
        return {"status": "ok"}

    @app.get("/contacts")
    def read(who: Annotated[Identity, Depends(require_scopes("contacts.read"))]) -> dict[str, object]:
        ran.append("read")
        return {"user": who.user_id, "token": who.token_id}

    @app.post("/contacts")
    def write(who: Annotated[Identity, Depends(require_scopes("contacts.write", "contacts.read"))]) -> dict[str, int]:
        ran.append("write")
        return {"user": who.user_id}

    @app.get("/whoami")
    def whoami(request: Request) -> dict[str, object]:
        ran.append("whoami")
        who = request.state.kbai
        return {"user": who.user_id, "scopes": sorted(who.scopes)}

    @app.get("/public/page")
    def public() -> dict[str, str]:
        ran.append("public")
        return {"hello": "world"}

    @app.get("/fails")
    def fails(_: Annotated[Identity, Depends(require_scopes())]) -> dict[str, str]:
        ran.append("fails")
        raise HTTPException(404, "no such thing")

    return app, ran


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(r, status: int, code: str, rfc6750: str | None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    challenge = r.headers.get("www-authenticate")
    if rfc6750 is None:
        assert challenge is None
    else:
        assert challenge.startswith('Bearer realm="kbai"'), challenge
        assert f'error="{rfc6750}"' in challenge, challenge


@pytest.fixture(params=[True, False], ids=["middleware", "dependency-only"])
def setup(request: pytest.FixtureRequest):
    verifier = FakeVerifier()
    app, ran = make_app(verifier, middleware=request.param)
    with TestClient(app) as client:
        yield client, verifier, ran, request.param


def test_good_token_with_the_scope_gets_through_and_counts_as_used(setup) -> None:
    client, verifier, ran, _ = setup
    r = client.get("/contacts", headers=bearer(READER))
    assert r.status_code == 200 and r.json() == {"user": 3, "token": 2}
    assert ran == ["read"] and verifier.used == [2]


def test_missing_scope_is_403_insufficient_scope_naming_it(setup) -> None:
    client, verifier, ran, _ = setup
    r = client.post("/contacts", headers=bearer(READER))
    assert_refused(r, 403, "insufficient_scope", "insufficient_scope")
    assert 'scope="contacts.write"' in r.headers["www-authenticate"]
    assert "contacts.write" in r.json()["error"]["message"] and "contacts.read" not in r.json()["error"]["message"]
    assert ran == [] and verifier.used == []


def test_no_header_is_401_with_a_bare_bearer_challenge(setup) -> None:
    client, verifier, ran, _ = setup
    r = client.get("/contacts")
    assert r.status_code == 401 and r.json()["error"]["code"] == "not_authenticated"
    assert r.headers["www-authenticate"] == 'Bearer realm="kbai"'
    assert ran == [] and verifier.asked == []


@pytest.mark.parametrize(
    "header",
    [
        "Bearer kbai_pk_nope",
        "Bearer " + GOOD.upper(),
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer " + REVOKED,
        "Bearer kbai_pk_" + "e" * 64,
    ],
)
def test_bad_tokens_are_401_invalid_token(setup, header: str) -> None:
    client, verifier, ran, _ = setup
    r = client.get("/contacts", headers={"Authorization": header})
    assert_refused(r, 401, "invalid_token", "invalid_token")
    assert ran == [] and verifier.used == []


def test_revoked_gets_kbai_own_message(setup) -> None:
    client, _, _, _ = setup
    r = client.get("/contacts", headers=bearer(REVOKED))
    assert r.json()["error"]["message"] == errors.for_outcome("revoked").message


def test_unavailable_verifier_is_503_and_never_runs_the_route(setup) -> None:
    client, _, ran, _ = setup
    r = client.get("/contacts", headers=bearer(DOWN))
    assert_refused(r, 503, "auth_unavailable", None)
    assert ran == []


def test_exempt_paths_pass_without_a_token(setup) -> None:
    client, verifier, ran, _ = setup
    assert client.get("/healthz").status_code == 200
    assert client.get("/public/page").status_code == 200
    assert ran == ["healthz", "public"] and verifier.asked == []


def test_verifier_runs_with_the_app_lifespan(setup) -> None:
    client, verifier, _, _ = setup
    assert verifier.events == ["start"]
    client.__exit__(None, None, None)
    assert verifier.events == ["start", "stop"]


def test_middleware_protects_routes_without_the_dependency() -> None:
    verifier = FakeVerifier()
    app, ran = make_app(verifier)
    with TestClient(app) as client:
        assert client.get("/whoami").status_code == 401
        assert client.get("/whoami", headers=bearer("kbai_pk_x")).status_code == 401
        assert client.get("/nowhere").status_code == 401  # no hint about which paths exist
        r = client.get("/whoami", headers=bearer(READER))
        assert r.status_code == 200 and r.json() == {"user": 3, "scopes": ["contacts.read"]}
    assert ran == ["whoami"]
    assert verifier.asked.count(READER) == 1  # verified once, by the middleware only


def test_middleware_counts_a_use_only_when_the_response_succeeds() -> None:
    verifier = FakeVerifier()
    app, _ = make_app(verifier)
    with TestClient(app) as client:
        assert client.get("/fails", headers=bearer(GOOD)).status_code == 404
        assert client.get("/contacts", headers=bearer(GOOD)).status_code == 200
    assert verifier.used == [1]


def test_exempt_route_with_require_scopes_still_authenticates() -> None:
    verifier = FakeVerifier()
    app = FastAPI()
    install(app, verifier, exempt_paths=("/contacts",))

    @app.get("/contacts")
    def read(who: Annotated[Identity, Depends(require_scopes("contacts.read"))]) -> dict[str, int]:
        return {"user": who.user_id}

    with TestClient(app) as client:
        assert client.get("/contacts").status_code == 401
        assert client.get("/contacts", headers=bearer(READER)).status_code == 200


def test_without_install_the_dependency_still_refuses_with_status_and_challenge() -> None:
    verifier = FakeVerifier()
    app = FastAPI()
    app.state.kbai_verifier = verifier

    @app.get("/contacts")
    def read(who: Annotated[Identity, Depends(require_scopes("contacts.write"))]) -> dict[str, int]:
        return {"user": who.user_id}

    with TestClient(app) as client:
        r = client.get("/contacts", headers=bearer(READER))
        assert r.status_code == 403 and 'error="insufficient_scope"' in r.headers["www-authenticate"]
        r = client.get("/contacts", headers=bearer(REVOKED))
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
        assert client.get("/contacts", headers=bearer(GOOD)).status_code == 200


def test_dependency_without_any_verifier_is_a_configuration_error() -> None:
    app = FastAPI()

    @app.get("/contacts")
    def read(_: Annotated[Identity, Depends(require_scopes("contacts.read"))]) -> dict[str, str]:
        return {}

    with TestClient(app, raise_server_exceptions=True) as client, pytest.raises(RuntimeError, match="kbai.sdk.install"):
        client.get("/contacts", headers=bearer(GOOD))


def test_scopes_must_be_permission_keys() -> None:
    for bad in ("", "contacts read", " contacts.read"):
        with pytest.raises(ValueError):
            require_scopes(bad)


def test_websocket_needs_a_token_too() -> None:
    verifier = FakeVerifier()
    app = FastAPI()
    app.add_middleware(KbaiAuthMiddleware, verifier=verifier)

    @app.websocket("/feed")
    async def feed(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_json({"user": ws.state.kbai.user_id})
        await ws.close()

    with TestClient(app) as client:
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/feed"):
            pass
        assert refused.value.code == 1008
        with client.websocket_connect("/feed", headers=bearer(READER)) as ws:
            assert ws.receive_json() == {"user": 3}


def test_identity_missing_keeps_order_and_drops_repeats() -> None:
    who = identity("a.read")
    assert who.missing(["b.write", "a.read", "c.x", "b.write"]) == ("b.write", "c.x")
