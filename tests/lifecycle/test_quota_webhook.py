"""The ``token.quota_low`` webhook event (issue 19): when a token's quota drops below 10 % its tenant's webhook
receives one signed event per period, for a personal token (owner named) and for a service token (no owner:
the webhook is the only one told), again after a refill, never with the plaintext. A real webhook receiver,
requests through the real app's /auth/check, a frozen clock."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import httpx
from fastapi.testclient import TestClient

from kbai.clock import FrozenClock
from kbai.delivery.webhooks import verify
from kbai.tokens.limits import QUOTA_LOW
from tests.conftest import World
from tests.lifecycle.conftest import WebhookReceiver

DEV = "dev@acme.test"


def _check(client: TestClient, token: str) -> int:
    return client.get("/auth/check", headers={"Authorization": f"Bearer {token}"}).status_code


def _events(world: World, webhook: WebhookReceiver, wanted: int, wait: float = 10) -> list[dict[str, Any]]:
    """The quota_low events received, once ``wanted`` arrived (the share that crossed 10 % may be taken on
    the limiter's background thread; whatever its commit did not send, the outbox's next pass does). To show
    that one more did not come, ``wanted`` is one more than expected and ``wait`` short."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        world.services.outbox.dispatch()
        found = [httpx.Response(200, content=e.body).json() for e in webhook.events]
        found = [e for e in found if e["type"] == QUOTA_LOW]
        if len(found) >= wanted:
            return found
        time.sleep(0.05)
    return found


def test_below_ten_percent_the_webhook_gets_one_signed_event_per_token_and_period(
    world: World, clock: FrozenClock, client: TestClient, webhook: WebhookReceiver
) -> None:
    svc = world.services
    clock.set(clock.now().replace(hour=9, minute=0, second=0, microsecond=0))
    _policy, secret = svc.policies.set(world.admin, world.tenant_id, webhook_url=webhook.url)
    assert secret is not None
    personal, personal_token = svc.tokens.create(world.dev, "Zapier", ["users.read"], quota={"remaining": 100})
    service, service_token = svc.tokens.create_service(
        world.admin,
        "Billing sync",
        ["users.read"],
        quota={"remaining": 50, "refill": {"amount": 50, "interval": "day"}},
    )

    # The alert reads the stored remainder, which runs up to two shares (2 x 5 %) ahead of the requests served:
    # with 20 % left it cannot have fired, with 5 % left it must have.
    for _ in range(80):
        assert _check(client, personal_token) == 200
    for _ in range(40):
        assert _check(client, service_token) == 200
    assert _events(world, webhook, 1, wait=1.5) == []

    for _ in range(15):  # 5 % left
        assert _check(client, personal_token) == 200
    for _ in range(7):  # 6 % left
        assert _check(client, service_token) == 200
    events = _events(world, webhook, 2)
    assert len(events) == 2
    by_token = {e["data"]["token_id"]: e for e in events}
    mine, theirs = by_token[personal.id], by_token[service.id]
    assert mine["data"]["owner"] == DEV and mine["data"]["service"] is False
    assert mine["data"]["prefix"] == personal.prefix and mine["data"]["name"] == "Zapier"
    assert mine["data"]["quota_total"] == 100 and 0 <= mine["data"]["quota_remaining"] < 10
    assert theirs["data"]["owner"] is None and theirs["data"]["service"] is True
    assert theirs["data"]["quota_total"] == 50 and 0 <= theirs["data"]["quota_remaining"] < 5  # the stored remainder
    assert {e["data"]["tenant_id"] for e in events} == {world.tenant_id}
    for received in webhook.events:  # signed as every event is
        headers = dict(httpx.Headers(received.headers))
        assert headers["x-kbai-event"] == QUOTA_LOW
        assert verify(secret, headers, received.body, clock.now())
        assert not verify(secret, headers, received.body + b" ", clock.now())
        body = received.body.decode()
        assert personal_token not in body and service_token not in body

    # Spending the rest tells nobody again; the quota runs out.
    for _ in range(5):
        assert _check(client, personal_token) == 200
    assert _check(client, personal_token) == 401
    for _ in range(3):
        _check(client, service_token)
    assert len(_events(world, webhook, 3, wait=1.5)) == 2

    # The next day the service token's quota is refilled; dropping below 10 % again is a new period's event.
    clock.set(clock.now().replace(hour=0) + timedelta(days=1, minutes=1))
    for _ in range(46):
        assert _check(client, service_token) == 200
    events = _events(world, webhook, 3)
    assert len(events) == 3
    again = events[-1]
    assert again["data"]["token_id"] == service.id and again["id"] != theirs["id"]
    assert sum(1 for e in events if e["data"]["token_id"] == personal.id) == 1
