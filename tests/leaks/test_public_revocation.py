"""Public revocation: anyone who found tokens may send them; ours are revoked and their owners told,
the answer never says whose they were, and each client IP gets 10 requests a minute."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from kbai import tokenformat as fmt
from kbai.services import Services
from kbai.store.models import AuditEvent, Notification
from tests.conftest import World

PATH = "/api/v1/credentials/revoke"
VARYING_HEADERS = {"date", "x-request-id", "content-length"}


def mint(world: World, name: str) -> str:
    return world.services.tokens.create(world.dev, name, ["users.read"])[1]


def status(svc: Services, token: str) -> str:
    return svc.tokens.verify(token).outcome.value


def test_revokes_ours_and_answers_the_same_either_way(world: World, client: TestClient) -> None:
    svc = world.services
    ours, spare = mint(world, "Zapier production"), mint(world, "Local dev")
    r1 = client.post(PATH, json={"credentials": [ours, "not a token"]})
    r2 = client.post(PATH, json={"credentials": [fmt.mint(), "not a token"]})
    assert r1.status_code == r2.status_code == 202
    assert r1.json() == r2.json() == {"received": 2}
    h1 = {k: v for k, v in r1.headers.items() if k not in VARYING_HEADERS}
    h2 = {k: v for k, v in r2.headers.items() if k not in VARYING_HEADERS}
    assert h1 == h2
    assert status(svc, ours) == "revoked" and status(svc, spare) == "valid"
    with svc.db.read() as s:
        notes = list(s.scalars(select(Notification)))
        [event] = s.scalars(select(AuditEvent).where(AuditEvent.action == "token.leak_report")).all()
    assert {n.user_id for n in notes} == {world.dev.user_id, world.admin.user_id}
    assert all("public credential revocation" in n.body for n in notes)
    assert event.actor == "service:public credential revocation" and event.ip == "testclient"
    assert event.details["revoked"] is True and event.details["url"] is None
    # Sending it again changes nothing and still answers the same.
    r3 = client.post(PATH, json={"credentials": [ours, "not a token"]})
    assert r3.status_code == 202 and r3.json() == {"received": 2}


def test_a_thousand_credentials_at_once(world: World, client: TestClient) -> None:
    svc = world.services
    ours = mint(world, "Zapier production")
    credentials = [fmt.mint() for _ in range(999)] + [ours]
    r = client.post(PATH, json={"credentials": credentials})
    assert r.status_code == 202 and r.json() == {"received": 1000}
    assert status(svc, ours) == "revoked"
    r = client.post(PATH, json={"credentials": credentials + [fmt.mint()]})
    assert r.status_code == 422
    assert "1 to 1000" in r.json()["error"]["message"]


def test_bad_bodies_are_clear_422s_and_change_nothing(world: World, client: TestClient) -> None:
    svc = world.services
    ours = mint(world, "Zapier production")
    bodies = [
        b"",
        b"nope",
        b"[]",
        b'{"credentials": []}',
        b'{"credentials": "x"}',
        b'{"credentials": [1]}',
        b'{"tokens": ["x"]}',
        b'{"credentials": ["x"], "more": 1}',
        b"[" * 50_000,
        b"\xff",
        f'{{"credentials": [{{"token": "{ours}"}}]}}'.encode(),
    ]
    for body in bodies:
        svc.limiter.storage.reset()  # more bad bodies than one IP may send in a minute
        r = client.post(PATH, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, body[:20]
        error = r.json()["error"]
        assert error["code"] == "validation_error" and "credentials" in error["message"]
        leaked = ours in r.text
        assert not leaked
    assert status(svc, ours) == "valid"


def test_rate_limited_per_client_ip(world: World, client: TestClient) -> None:
    svc = world.services
    ours = mint(world, "Zapier production")
    for i in range(10):  # every request counts, good or bad
        body = {"credentials": [fmt.mint()]} if i % 2 else {"wrong": 1}
        assert client.post(PATH, json=body).status_code in (202, 422)
    r = client.post(PATH, json={"credentials": [ours]})
    assert r.status_code == 429
    retry_after = int(r.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert r.json()["error"]["code"] == "rate_limited"
    assert f"{retry_after} seconds" in r.json()["error"]["message"]
    assert status(svc, ours) == "valid"  # refused before anything was looked at
    # Token authentication is a different limit: the owner's token still works.
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {ours}"}).status_code == 200
