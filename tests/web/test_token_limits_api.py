"""A token's own rate limit and quota over HTTP (in-process app, real database, both backends, frozen clock):
the fields, /auth/check (401 + Retry-After, X-Kbai-Quota-Remaining), the API (429), introspection, the SDK,
refill, PATCH, rotation, the 10 % alert, and bad input. Two real servers sharing the count are in
tests/web/test_token_limits_live.py."""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from kbai.app import create_app
from kbai.clock import FrozenClock
from kbai.sdk.middleware import install
from kbai.sdk.verifiers import LocalVerifier
from kbai.services import Services
from kbai.store.models import Notification, Token
from kbai.tokens.limits import QUOTA_LOW
from tests.conftest import OPERATOR, World
from tests.web.conftest import login

T = "/api/v1/tokens"
_NAMES = itertools.count()


@pytest.fixture
def client(services: Services, world: World) -> Iterator[TestClient]:
    with TestClient(create_app(services, start_background=False)) as c:
        yield c


@pytest.fixture
def csrf(client: TestClient) -> str:
    return login(client, "dev@acme.test", "dev-password-1")


def _create(client: TestClient, csrf: str, **extra: Any) -> dict[str, Any]:
    body = {"name": f"limited-{next(_NAMES)}", "scopes": ["users.read"], **extra}
    r = client.post(T, json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _check(client: TestClient, token: str) -> Any:
    return client.get("/auth/check", headers=_bearer(token))


def _listed(client: TestClient, token_id: int) -> dict[str, Any]:
    rows = client.get(T).json()["tokens"]
    return next(r for r in rows if r["id"] == token_id)  # type: ignore[no-any-return]


# ---- the fields ----------------------------------------------------------------------------------
def test_create_returns_and_lists_the_rate_limit_and_quota(client: TestClient, csrf: str) -> None:
    made = _create(
        client,
        csrf,
        rate_limit={"requests": 100, "per": "minute"},
        quota={"remaining": 5000, "refill": {"amount": 10000, "interval": "month"}},
    )
    assert made["rate_limit"] == {"requests": 100, "per": "minute"}
    assert made["quota"] == {"remaining": 5000, "refill": {"amount": 10000, "interval": "month"}}
    assert _listed(client, made["id"])["quota"]["remaining"] == 5000
    plain = _create(client, csrf)
    assert (plain["rate_limit"], plain["quota"]) == (None, None)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rate_limit", {"requests": 0, "per": "minute"}),
        ("rate_limit", {"requests": 10, "per": "week"}),
        ("rate_limit", {"requests": "10", "per": "minute"}),
        ("rate_limit", {"requests": 10}),
        ("rate_limit", {"requests": 10, "per": "minute", "burst": 5}),
        ("quota", {"remaining": -1}),
        ("quota", {"remaining": 2_000_000_001}),
        ("quota", {"remaining": 10, "refill": {"amount": 0, "interval": "day"}}),
        ("quota", {"remaining": 10, "refill": {"amount": 5, "interval": "year"}}),
        ("quota", {"left": 10}),
        ("quota", [10]),
    ],
)
def test_a_bad_rate_limit_or_quota_is_422_and_creates_nothing(
    client: TestClient, csrf: str, services: Services, field: str, value: object
) -> None:
    with services.db.read() as s:
        before = s.scalar(select(func.count(Token.id)))
    r = client.post(T, json={"name": "bad", "scopes": ["users.read"], field: value}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error"
    with services.db.read() as s:
        assert s.scalar(select(func.count(Token.id))) == before


# ---- the rate limit ------------------------------------------------------------------------------
def test_over_the_rate_is_401_with_retry_after_at_auth_check_and_429_on_the_api(
    client: TestClient, csrf: str, clock: FrozenClock
) -> None:
    made = _create(client, csrf, rate_limit={"requests": 10, "per": "minute"})
    served = [_check(client, made["token"]).status_code for _ in range(10)]
    assert served == [200] * 10
    refused = _check(client, made["token"])
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert "rate limit of 10 per minute" in refused.headers["www-authenticate"]
    # The frozen clock stands at 12:00:00: the window ends in 60 seconds.
    assert refused.headers["retry-after"] == "60"
    api = client.get("/api/v1/me", headers=_bearer(made["token"]))
    assert api.status_code == 429 and api.json()["error"]["code"] == "rate_limited"
    assert api.headers["retry-after"] == "60"
    clock.advance(seconds=60)  # the next window
    assert _check(client, made["token"]).status_code == 200
    # Another token is not held back by this one's limit.
    assert _check(client, _create(client, csrf)["token"]).status_code == 200


# ---- the quota -----------------------------------------------------------------------------------
def test_the_quota_counts_down_exactly_then_refuses_without_a_refill(client: TestClient, csrf: str) -> None:
    made = _create(client, csrf, quota={"remaining": 5})
    left = []
    for _ in range(5):
        r = _check(client, made["token"])
        assert r.status_code == 200
        left.append(r.headers["x-kbai-quota-remaining"])
    assert left == ["4", "3", "2", "1", "0"]
    refused = _check(client, made["token"])
    assert refused.status_code == 401 and refused.headers["x-kbai-quota-remaining"] == "0"
    assert "used its whole quota" in refused.headers["www-authenticate"]
    assert "retry-after" not in refused.headers  # no refill comes
    api = client.get("/api/v1/me", headers=_bearer(made["token"]))
    assert api.status_code == 429 and api.json()["error"]["code"] == "quota_exhausted"
    assert _listed(client, made["id"])["quota"]["remaining"] == 0


def test_the_api_counts_against_the_quota_and_lists_it_exactly(client: TestClient, csrf: str) -> None:
    made = _create(client, csrf, quota={"remaining": 50})
    for _ in range(7):
        assert client.get("/api/v1/me", headers=_bearer(made["token"])).status_code == 200
    assert _listed(client, made["id"])["quota"]["remaining"] == 43


def test_a_refill_brings_the_quota_back_at_the_period_and_retry_after_says_when(
    client: TestClient, csrf: str, clock: FrozenClock
) -> None:
    made = _create(client, csrf, quota={"remaining": 3, "refill": {"amount": 5, "interval": "day"}})
    assert [_check(client, made["token"]).status_code for _ in range(3)] == [200] * 3
    refused = client.get("/api/v1/me", headers=_bearer(made["token"]))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "quota_exhausted"
    assert refused.headers["retry-after"] == str(12 * 3600)  # 12:00 UTC now, the refill at midnight
    assert "until Jan 2, 2026 00:00 UTC" in refused.json()["error"]["message"]
    clock.advance(hours=12)
    r = _check(client, made["token"])
    assert r.status_code == 200 and r.headers["x-kbai-quota-remaining"] == "4"


def test_patch_sets_a_new_quota_and_rate_limit_and_can_remove_them(client: TestClient, csrf: str) -> None:
    made = _create(client, csrf, quota={"remaining": 1}, rate_limit={"requests": 1000, "per": "hour"})
    assert _check(client, made["token"]).status_code == 200
    assert _check(client, made["token"]).status_code == 401
    r = client.patch(f"{T}/{made['id']}", json={"quota": {"remaining": 2}}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["quota"] == {"remaining": 2, "refill": None}
    assert [_check(client, made["token"]).status_code for _ in range(3)] == [200, 200, 401]
    r = client.patch(f"{T}/{made['id']}", json={"quota": None, "rate_limit": None}, headers={"X-CSRF-Token": csrf})
    assert (r.json()["quota"], r.json()["rate_limit"]) == (None, None)
    ok = _check(client, made["token"])
    assert ok.status_code == 200 and "x-kbai-quota-remaining" not in ok.headers
    bad = client.patch(
        f"{T}/{made['id']}", json={"rate_limit": {"requests": -5, "per": "hour"}}, headers={"X-CSRF-Token": csrf}
    )
    assert bad.status_code == 422 and _listed(client, made["id"])["rate_limit"] is None


def test_a_rotation_carries_the_quota_on_and_never_refills_it(client: TestClient, csrf: str) -> None:
    made = _create(client, csrf, quota={"remaining": 10}, rate_limit={"requests": 5, "per": "second"})
    for _ in range(3):
        assert _check(client, made["token"]).status_code == 200
    r = client.post(f"{T}/{made['id']}/rotate", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    assert r.json()["rate_limit"] == {"requests": 5, "per": "second"}
    # What the old token had not used, less at most the share this instance had taken for it.
    assert 6 <= r.json()["quota"]["remaining"] <= 7


def test_below_ten_percent_the_owner_is_told_once(client: TestClient, csrf: str, services: Services) -> None:
    made = _create(client, csrf, quota={"remaining": 100})
    for _ in range(95):
        assert _check(client, made["token"]).status_code == 200
    deadline = time.monotonic() + 10  # the share that crossed 10 % may be taken on the background thread
    count = 0
    while time.monotonic() < deadline:
        with services.db.read() as s:
            count = s.scalar(select(func.count(Notification.id)).where(Notification.kind == QUOTA_LOW)) or 0
        if count:
            break
        time.sleep(0.05)
    assert count == 1
    for _ in range(5):
        _check(client, made["token"])
    with services.db.read() as s:
        notes = list(s.scalars(select(Notification).where(Notification.kind == QUOTA_LOW)))
    assert len(notes) == 1 and made["prefix"] in notes[0].title


# ---- introspection and the SDK -----------------------------------------------------------------------
def _basic(services: Services) -> dict[str, str]:
    credential, secret = services.credentials.create(OPERATOR, f"limits-{next(_NAMES)}")
    return {"Authorization": "Basic " + base64.b64encode(f"{credential.client_id}:{secret}".encode()).decode()}


def test_introspection_counts_and_says_why_it_refuses(client: TestClient, csrf: str, services: Services) -> None:
    made = _create(client, csrf, quota={"remaining": 1}, rate_limit={"requests": 100, "per": "hour"})
    auth = _basic(services)
    first = client.post("/api/v1/introspect", data={"token": made["token"]}, headers=auth).json()
    assert first["active"] is True and first["quota_remaining"] == 0
    assert first["rate_limit"] == {"requests": 100, "per": "hour"}
    second = client.post("/api/v1/introspect", data={"token": made["token"]}, headers=auth).json()
    assert second["active"] is False and second["kbai_refused"] == "quota_exhausted"


def _sdk_app(services: Services) -> FastAPI:
    app = FastAPI()
    install(app, LocalVerifier(services=services))

    @app.get("/contacts")
    def contacts(request: Request) -> dict[str, Any]:
        return {"token_id": request.state.kbai.token_id}

    return app


def test_the_sdk_counts_the_rate_limit_and_quota(client: TestClient, csrf: str, services: Services) -> None:
    quota = _create(client, csrf, quota={"remaining": 2})
    rate = _create(client, csrf, rate_limit={"requests": 3, "per": "hour"})
    with TestClient(_sdk_app(services)) as sdk:
        assert [sdk.get("/contacts", headers=_bearer(quota["token"])).status_code for _ in range(3)] == [200, 200, 429]
        r = sdk.get("/contacts", headers=_bearer(quota["token"]))
        assert r.json()["error"]["code"] == "quota_exhausted"
        codes = [sdk.get("/contacts", headers=_bearer(rate["token"])) for _ in range(4)]
        assert [c.status_code for c in codes] == [200, 200, 200, 429]
        assert codes[-1].json()["error"]["code"] == "rate_limited" and codes[-1].headers["retry-after"] == "3600"
