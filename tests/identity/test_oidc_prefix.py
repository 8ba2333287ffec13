"""OIDC sign-in with kbai under KBAI_PUBLIC_URL's path, through the real provider (issue 14).

The redirect URI kbai sends is KBAI_PUBLIC_URL/oidc/callback (the one registered at the provider), the
flow cookie lives under /kbai/oidc/callback, the person lands on the page under /kbai they were going to,
and a failed callback's "Back to log in" stays under the prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.identity.conftest import Rig, make_rig
from tests.identity.provider import OidcProvider, login_at_provider

PUBLIC = "http://testserver/kbai"
pytestmark = pytest.mark.parametrize("backend", ["sqlite"])  # the protocol's addresses, not the database's


@pytest.fixture
def rig(database_url: str, oidc_provider: OidcProvider) -> Iterator[Rig]:
    made = make_rig(database_url, oidc_provider, public_url=PUBLIC)
    oidc_provider.add_client(PUBLIC + "/oidc/callback")  # what an operator registers with KBAI_PUBLIC_URL
    yield made
    made.svc.close()


def test_sign_in_under_the_prefix_uses_the_public_redirect_uri_and_lands_under_it(rig: Rig) -> None:
    rig.provider.set_account(
        "alice", "pw", email="alice@acme.test", email_verified=True, org_id="org-acme", roles=["Developers"]
    )
    with rig.client() as client:
        login = client.get("/kbai/login", params={"next": "/kbai/system-settings/api-keys"})
        button = re.search(r'href="([^"]*)">Sign in with', login.text)
        assert button is not None and button.group(1).replace("&amp;", "&").replace("%2F", "/") == (
            "/kbai/oidc/login?next=/kbai/system-settings/api-keys"
        )
        start = client.get("/kbai/oidc/login", params={"next": "/kbai/system-settings/api-keys"})
        assert start.status_code == 303, start.text[:300]
        assert parse_qs(urlsplit(start.headers["location"]).query)["redirect_uri"] == [PUBLIC + "/oidc/callback"]
        assert re.search(r"(?i)kbai_oidc_flow=[^;]+;.*path=/kbai/oidc/callback(;|$)", start.headers["set-cookie"])
        back = login_at_provider(start.headers["location"], "alice", "pw")
        assert back.url.startswith(PUBLIC + "/oidc/callback?")
        landed = client.get(back.path_and_query)
        assert landed.status_code == 303, landed.text[:300]
        assert landed.headers["location"] == "/kbai/system-settings/api-keys"
        session = [h for h in landed.headers.get_list("set-cookie") if h.startswith("kbai_session=")]
        assert session and re.search(r"(?i);\s*path=/kbai(;|$)", session[0]), session
        assert client.get("/kbai/api/v1/me").json()["user"]["email"] == "alice@acme.test"


def test_a_failed_callback_under_the_prefix_leads_back_under_it(rig: Rig) -> None:
    with rig.client() as client:
        r = client.get("/kbai/oidc/callback", params={"code": "x", "state": "y"})
        assert r.status_code == 400 and 'data-code="oidc_state_mismatch"' in r.text
        assert 'href="/kbai/login"' in r.text and 'href="/login"' not in r.text
        assert client.get("/oidc/callback", params={"code": "x", "state": "y"}).status_code == 404
