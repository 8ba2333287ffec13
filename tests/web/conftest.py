"""In-process API fixtures: the real app on the test's services, driven by Starlette's TestClient."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kbai.app import create_app
from kbai.services import Services
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


def accept_invitation(client: TestClient, url: str, password: str) -> None:
    """Use an invitation link as its person would, through its page (GET, then the form with its CSRF value);
    the client's own cookies (someone else's session, say) are kept."""
    import re
    from urllib.parse import urlsplit

    saved = list(client.cookies.jar)
    client.cookies.clear()
    path = urlsplit(url).path
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    r = client.post(
        path,
        data={"csrf_token": found.group(1), "password": password, "password_again": password},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    client.cookies.clear()
    for cookie in saved:
        client.cookies.jar.set_cookie(cookie)
