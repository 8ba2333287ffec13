"""Secrets in the HTML pages: a full token is on the page that creates it, once, and on no page after it:
not on any page a user or an admin can open (every GET page route is visited), and not on the error pages
that answer a form into which someone pasted a token (token name, expiry date, role name, email, login
email, the login page's ``next``), where the pasted value comes back cut to its display prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kbai.app import create_app
from kbai.services import Services
from kbai.tokenformat import digest
from kbai.web import pages
from tests.conftest import World

TOKEN_RE = re.compile(r"kbai_pk_[0-9a-f]{64}")
FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
H = pages.HOME


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services, start_background=False), follow_redirects=False) as c:
        yield c


def _login(c: TestClient, email: str, password: str) -> str:
    c.cookies.clear()
    field = FIELD.search(c.get("/login").text)
    assert field is not None
    r = c.post("/login", data={"email": email, "password": password, "csrf_token": field.group(1)})
    assert r.status_code == 303
    csrf = FIELD.search(c.get(H).text)
    assert csrf is not None
    return csrf.group(1)


def test_no_page_after_the_creation_page_holds_a_token(client: TestClient, world: World) -> None:
    svc = world.services
    minted: list[str] = []
    pages_seen: dict[str, str] = {}  # what -> page text

    # -- dev makes a token through the form (the one page allowed to show it), another by API, rotates it
    csrf = _login(client, "dev@acme.test", "dev-password-1")
    r = client.post(
        H + "/api-keys", data={"name": "From the form", "scopes": ["users.read"], "expiry": "90", "csrf_token": csrf}
    )
    # Post/redirect/get: neither the redirect nor its address holds the token; the page it lands on does, once.
    assert r.status_code == 303 and TOKEN_RE.search(r.text + r.headers["location"]) is None
    pages_seen["the answer to the create form (a redirect)"] = r.text + r.headers["location"]
    r = client.get(r.headers["location"])
    assert r.status_code == 200
    minted += TOKEN_RE.findall(r.text)
    assert len(minted) == 1, "the creation page shows the new token once"
    made, second = svc.tokens.create(world.dev, "From the API", ["users.read"])
    new, rotated, _old = svc.tokens.rotate(world.dev, made.id, 3600)  # the old one works for an hour
    token_id = new.id
    minted += [second, rotated]

    # -- the token pasted where it does not belong: every answer is an error page that cuts it short
    pasted = minted[0]
    for what, path, data in (
        ("name", H + "/api-keys", {"name": f"ci {pasted}", "scopes": ["users.read"], "expiry": "90"}),
        (
            "expiry date",
            H + "/api-keys",
            {"name": "x", "scopes": ["users.read"], "expiry": "custom", "expires_on": pasted},
        ),
    ):
        r = client.post(path, data={**data, "csrf_token": csrf})
        assert r.status_code == 422, what
        cut_short = pasted[:12] + "…" in r.text  # a bare boolean: never print a page that may hold it
        assert cut_short or what == "expiry date", what
        pages_seen[f"dev pastes a token as the {what}"] = r.text

    # -- every page dev can open
    def visit_all(who: str) -> set[str]:
        visited = set()
        for route in pages.router.routes:
            if "GET" not in getattr(route, "methods", ()):
                continue
            path = route.path.replace("{role_id}", str(world.dev_role_id)).replace("{token_id}", str(token_id))
            path = path.replace("{user_id}", str(world.dev.user_id))  # the deactivation step lists dev's tokens
            r = client.get(path)
            assert r.status_code < 500, f"{who} GET {route.path}: {r.status_code}"
            pages_seen[f"{who} GET {route.path}"] = r.text
            visited.add(route.path)
        return visited

    visited = visit_all("dev")
    assert visited == {r.path for r in pages.router.routes if "GET" in getattr(r, "methods", ())}

    # -- the admin: every page, and the forms an admin might paste a token into
    csrf = _login(client, "admin@acme.test", "admin-password-1")
    for what, path, data in (
        ("role name", H + "/roles", {"name": pasted}),
        ("email", H + "/users", {"email": f"{pasted}@acme.test"}),
        ("service token name", H + "/api-keys/service-tokens", {"name": f"ci {pasted}", "scopes": ["users.read"]}),
    ):
        r = client.post(path, data={**data, "csrf_token": csrf})
        assert r.status_code == 422, what
        pages_seen[f"admin pastes a token as the {what}"] = r.text
    # A service token made through its form: on the API Keys page it lands on, once, as a personal one.
    r = client.post(
        H + "/api-keys/service-tokens",
        data={"name": "Billing sync", "scopes": ["users.read"], "expiry": "90", "csrf_token": csrf},
    )
    assert r.status_code == 303 and TOKEN_RE.search(r.text + r.headers["location"]) is None
    service = TOKEN_RE.findall(client.get(r.headers["location"]).text)
    assert len(service) == 1 and svc.tokens.verify(service[0]).ok
    minted += service
    visit_all("admin")

    # -- someone pastes a token into the login form, or into a link to the login page
    client.cookies.clear()
    pages_seen["login page with a token in next"] = client.get("/login", params={"next": f"/x/{pasted}"}).text
    field = FIELD.search(client.get("/login").text)
    assert field is not None
    r = client.post(
        "/login", data={"email": pasted, "password": "x", "csrf_token": field.group(1), "next": f"/x/{pasted}"}
    )
    pages_seen["login with a token as the email"] = r.text

    assert len(pages_seen) >= 2 * len(visited) + 6
    for token in minted:
        secret = token[len("kbai_pk_") :]
        found = [what for what, text in pages_seen.items() if secret in text.lower()]
        # Names of pages and a digest only: a failing run never prints the token.
        assert not found, f"token with digest {digest(token)[:12]} is on: {found}"


def test_the_token_travels_to_the_next_page_sealed_and_only_once(client: TestClient, world: World) -> None:
    """Post/redirect/get: between the POST and the page, the token sits in the session's flash, sealed with a
    key derived from the cookie (the database holds only the cookie's digest): no 64-hex secret in the row,
    useless with another cookie, and gone once the page showed it."""
    from sqlalchemy import select

    from kbai.store.models import LoginSession

    svc = world.services
    csrf = _login(client, "dev@acme.test", "dev-password-1")
    r = client.post(
        H + "/api-keys", data={"name": "Sealed", "scopes": ["users.read"], "expiry": "90", "csrf_token": csrf}
    )
    assert r.status_code == 303
    with svc.db.read() as s:
        row = s.scalars(select(LoginSession).where(LoginSession.flash.is_not(None))).one()
    flash = row.flash or ""
    assert re.search(r"[0-9a-f]{64}", flash) is None and "kbai_pk_" not in flash
    info = svc.sessions.resolve(client.cookies.get("kbai_session"))
    assert info is not None and info.has_flash
    # Another cookie cannot open it (and a failed attempt uses it up: nothing is shown to anyone then).
    assert svc.sessions.take_flash(info, "not-the-cookie") is None
    assert TOKEN_RE.search(client.get(H + "/api-keys").text) is None

    r = client.post(
        H + "/api-keys", data={"name": "Sealed again", "scopes": ["users.read"], "expiry": "90", "csrf_token": csrf}
    )
    first = client.get(r.headers["location"]).text
    shown = TOKEN_RE.findall(first)
    assert len(shown) == 1 and svc.tokens.verify(shown[0]).authenticated
    with svc.db.read() as s:
        assert s.scalars(select(LoginSession.flash).where(LoginSession.flash.is_not(None))).all() == []
    assert TOKEN_RE.search(client.get(r.headers["location"]).text) is None, "shown once"
