"""In-process API fixtures: the real app on the test's services, driven by Starlette's TestClient."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kbai.services import Services
from kbai.web.app import create_app
from tests.conftest import World


@pytest.fixture
def app_client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services, start_background=False)) as client:
        yield client


def login(client: TestClient, email: str, password: str) -> str:
    r = client.post("/api/v1/session", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return str(r.json()["csrf_token"])


@pytest.fixture
def dev_client(world: World, app_client: TestClient) -> tuple[TestClient, str]:
    """A client logged in as dev@acme.test; returns (client, csrf token)."""
    return app_client, login(app_client, "dev@acme.test", "dev-password-1")
