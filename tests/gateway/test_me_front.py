"""GET /api/v1/me with a warm token is answered by the raw-ASGI front (kbai.gateway.me), byte for byte as
the FastAPI route answers it; everything else goes on to that route.

The first request of a token is cold, so the route answers it; the front is then called directly with a
raw ASGI scope, and a second request goes through the whole app again: all three must agree.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kbai.app import create_app
from kbai.clock import FrozenClock
from kbai.config import Settings
from kbai.gateway.me import PATH, MeFront
from kbai.services import Services
from kbai.store.models import Token
from kbai.tokens.verify import Outcome
from tests.conftest import World, build_world, run_coroutine

SCOPES = ["users.read", "roles.read"]


def _token(world: World, scopes: list[str] = SCOPES) -> tuple[int, str]:
    view, plaintext = world.services.tokens.create(world.dev, "me", scopes, expires_in_days=30)
    return view.id, plaintext


def _scope(token: str | None, *, extra: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    headers = [(b"host", b"testserver"), (b"user-agent", b"me-test"), *(extra or [])]
    if token is not None:
        headers.append((b"authorization", b"Bearer " + token.encode()))
    return {
        "type": "http",
        "method": "GET",
        "path": PATH,
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("10.0.0.7", 5000),
    }


def _call(front: MeFront, scope: dict[str, Any]) -> tuple[bool, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    answered = run_coroutine(front.answer(scope, send))
    return answered, sent


def _comparable(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower(), v) for k, v in headers if k.lower() != b"x-request-id"]


@pytest.fixture
def client(services: Services) -> Any:
    with TestClient(create_app(services, start_background=False)) as c:
        yield c


@pytest.mark.parametrize("owner", ["personal", "service"])
def test_the_front_sends_what_the_route_sends(world: World, client: TestClient, owner: str) -> None:
    if owner == "service":  # owned by the tenant: "user" is null on both paths
        view, token = world.services.tokens.create_service(world.admin, "me", SCOPES, expires_in_days=30)
    else:
        _, token = _token(world)
    route = client.get(PATH, headers={"Authorization": f"Bearer {token}", "X-Request-Id": "route-answer"})
    assert route.status_code == 200, route.text
    assert route.json()["auth"] == "token" and route.json()["scopes"] == ["users.read", "roles.read"]
    assert (route.json()["user"] is None) == (owner == "service")
    assert route.headers["x-request-id"] == "route-answer"

    front = MeFront(world.services)
    answered, sent = _call(front, _scope(token, extra=[(b"x-request-id", b"front-answer")]))
    assert answered
    start, body = sent
    assert start["status"] == 200
    assert body["body"] == route.content
    assert _comparable(start["headers"]) == _comparable(list(route.headers.raw))
    assert (b"x-request-id", b"front-answer") in start["headers"]

    again = client.get(PATH, headers={"Authorization": f"Bearer {token}"})
    assert again.content == route.content
    assert _comparable(list(again.headers.raw)) == _comparable(list(route.headers.raw))


def test_a_cold_token_a_session_a_body_or_another_scheme_goes_on_to_the_route(world: World) -> None:
    _, token = _token(world)
    front = MeFront(world.services)
    for scope in (
        _scope(token),  # never looked up: cold
        _scope(None),
        _scope(None, extra=[(b"authorization", b"Basic dXNlcjpwYXNz")]),
    ):
        assert _call(front, scope) == (False, [])
    world.services.tokens.verify(token)  # now cached
    assert _call(front, _scope(token))[0]
    assert _call(front, _scope(token, extra=[(b"content-length", b"2")])) == (False, [])
    assert _call(front, _scope(token, extra=[(b"transfer-encoding", b"chunked")])) == (False, [])


def _verified(svc: Services, outcome: str) -> float:
    return svc.metrics.registry.get_sample_value("kbai_token_verifications_total", {"outcome": outcome}) or 0.0


def test_a_failing_token_is_left_to_the_route_which_counts_it_once(world: World, client: TestClient) -> None:
    token_id, token = _token(world)
    svc = world.services
    svc.tokens.verify(token)
    svc.tokens.revoke(world.dev, token_id)
    svc.tokens.verify(token)  # the revoked record, cached
    warm = svc.tokens.verify_warm(token)
    assert warm is not None and warm.outcome is Outcome.REVOKED  # the front could tell, but leaves it
    assert _call(MeFront(svc), _scope(token)) == (False, [])
    before = _verified(svc, "revoked")
    r = client.get(PATH, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert _verified(svc, "revoked") == before + 1  # once: by the route, through the whole app


def _served(svc: Services) -> float:
    labels = {"method": "GET", "route": PATH, "status": "200"}
    return svc.metrics.registry.get_sample_value("kbai_http_request_duration_seconds_count", labels) or 0.0


@pytest.mark.parametrize("log_reads", [False, True], ids=["counted", "logged"])
def test_the_front_counts_the_request_and_the_use_and_logs_a_line_only_when_asked(
    settings: Settings, clock: FrozenClock, caplog: pytest.LogCaptureFixture, log_reads: bool
) -> None:
    svc = Services.build(settings.model_copy(update={"access_log_token_reads": log_reads}), clock=clock)
    try:
        world = build_world(svc)
        token_id, token = _token(world)
        svc.tokens.verify(token)
        front = MeFront(svc)
        served, valid = _served(svc), _verified(svc, "valid")
        with caplog.at_level(logging.INFO, logger="kbai.access"):
            assert _call(front, _scope(token))[0]
        assert _served(svc) == served + 1
        assert _verified(svc, "valid") == valid + 1
        lines = [r for r in caplog.records if r.name == "kbai.access"]
        assert len(lines) == (1 if log_reads else 0)
        svc.usage.flush()
        with svc.db.read() as s:
            row = s.get(Token, token_id)
            assert row is not None
            assert row.last_used_at == clock.now().replace(microsecond=0)
            assert row.last_used_ip == "10.0.0.7"
            assert row.last_used_user_agent == "me-test"
    finally:
        svc.close()
