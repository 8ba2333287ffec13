"""kbai under the path of KBAI_PUBLIC_URL (issue 14, "Under the product's address"), in-process on both backends.

Every page is walked as an admin: each link, form action, script/style/img source, redirect Location and
cookie Path must stay under the prefix. The routes answer under it (the health routes at the root too),
nothing else answers outside it, the OpenAPI document names KBAI_PUBLIC_URL as its server, and emails link
to the full address. Without a path nothing moves: the same walk finds every address at the root.
(The same journey through a real nginx in Chromium: tests/ui/test_prefix_browser.py.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from kbai.app import create_app
from kbai.config import Settings
from kbai.services import Services
from tests.conftest import FAST_ARGON2, World, build_world

PUBLIC = "https://app.example.com/kbai"
PREFIX = "/kbai"
ORIGIN = "http://testserver"
ATTRS = re.compile(r'\b(href|action|src|data-openapi-url)="([^"]*)"')
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
TEMPLATES = Path(__file__).resolve().parents[2] / "src" / "kbai" / "web" / "templates"


@pytest.fixture
def settings(database_url: str, request: pytest.FixtureRequest) -> Settings:
    # With an accent colour, so the pages link /brand.css as well.
    return Settings(
        database_url=database_url, public_url=getattr(request, "param", PUBLIC), brand_accent="#0b5fff", **FAST_ARGON2
    )


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services, start_background=False), follow_redirects=False) as c:
        yield c


class Escapes:
    """Every address the pages hand out, and the ones that leave the prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.seen: set[str] = set()
        self.outside: list[str] = []

    def check(self, where: str, value: str) -> str | None:
        """Record ``value`` (an address found on ``where``); returns it as a local path when it is one of ours."""
        if not value or value.startswith(("#", "mailto:")):
            return None
        full = urljoin(ORIGIN + "/", value)  # (the pages have no relative addresses)
        parts = urlsplit(full)
        if f"{parts.scheme}://{parts.netloc}" != ORIGIN:
            if not full.startswith(PUBLIC if self.prefix else ORIGIN):
                self.outside.append(f"{where}: {value} (another origin)")
            return None
        self.seen.add(parts.path)
        if self.prefix and not parts.path.startswith(self.prefix + "/"):
            self.outside.append(f"{where}: {value}")
        if not self.prefix and parts.path.startswith(PREFIX + "/"):
            self.outside.append(f"{where}: {value} (a prefix although none is set)")
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def page(self, where: str, html: str) -> list[str]:
        """Checks every address on the page; returns the ones a GET may follow (links and sources of ours)."""
        return [
            local
            for attr, value in ATTRS.findall(html)
            if (local := self.check(where, value.replace("&amp;", "&"))) is not None and attr != "action"
        ]

    def redirect(self, where: str, r: object) -> str:
        location = r.headers["location"]  # type: ignore[attr-defined]
        assert r.status_code in (303, 307, 308), (where, r.status_code)  # type: ignore[attr-defined]
        local = self.check(where + " -> Location", location)
        assert local is not None, location
        for value in parse_qs(urlsplit(location).query).get("next", []):
            self.check(where + " -> next=", value)
        return local

    def cookies(self, where: str, r: object) -> None:
        for header in r.headers.get_list("set-cookie"):  # type: ignore[attr-defined]
            path = re.search(r"(?i)\bpath=([^;]*)", header)
            assert path is not None, header
            if self.prefix and not (path.group(1) == self.prefix or path.group(1).startswith(self.prefix + "/")):
                self.outside.append(f"{where}: cookie {header.split('=')[0]} Path={path.group(1)}")


def seed(world: World) -> None:
    """Something on every page: a second user's token, a custom role, a request for a permission,
    a notification (the admin revokes the developer's token later)."""
    svc = world.services
    svc.access.create_user(world.admin, world.tenant_id, "member@acme.test", "member-password-1", ["Member"])
    svc.tokens.create(world.dev, "Dev token", ["users.read"], expires_in_days=30)


def login(c: TestClient, esc: Escapes, root: str, email: str, password: str, going_to: str) -> None:
    c.cookies.clear()
    r = c.get(root + going_to)
    login_page = esc.redirect(going_to, r)
    assert login_page.startswith(root + "/login"), login_page
    form = c.get(login_page)
    esc.cookies("/login", form)
    nxt = re.search(r'name="next" value="([^"]*)"', form.text)
    assert nxt is not None and nxt.group(1) == root + going_to, "the login form does not come back to the page"
    esc.page(login_page, form.text)
    r = c.post(
        root + "/login",
        data={
            "email": email,
            "password": password,
            "next": nxt.group(1),
            "csrf_token": CSRF_RE.search(form.text).group(1),
        },
    )  # type: ignore[union-attr]
    esc.cookies("POST /login", r)
    assert esc.redirect("POST /login", r) == root + going_to


def walk(c: TestClient, esc: Escapes, start: str) -> dict[str, str]:
    """Every page reachable from ``start`` by GET links of ours (the CSV export and docs included)."""
    pages: dict[str, str] = {}
    todo = [start]
    while todo and len(pages) < 200:
        path = todo.pop()
        if path in pages:
            continue
        r = c.get(path)
        if r.status_code in (303, 307, 308):
            todo.append(esc.redirect(path, r))
            pages[path] = ""
            continue
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        pages[path] = r.text
        if r.headers["content-type"].startswith("text/html"):
            todo.extend(local.split("#")[0] for local in esc.page(path, r.text) if local.split("#")[0] not in pages)
    return pages


def post(c: TestClient, esc: Escapes, path: str, csrf: str, **data: object) -> str:
    r = c.post(path, data={**data, "csrf_token": csrf})
    return esc.redirect("POST " + path, r)


@pytest.mark.parametrize("settings", [PUBLIC, None], ids=["under-kbai", "no-prefix"], indirect=True)
def test_no_page_link_form_asset_redirect_or_cookie_escapes_the_prefix(services: Services) -> None:
    world = build_world(services)
    seed(world)
    root = services.settings.path_prefix
    esc = Escapes(root)
    with TestClient(create_app(services, start_background=False), follow_redirects=False) as c:
        # -- a member asks for Manage API Tokens (a request the admin then sees) and is sent back
        login(c, esc, root, "member@acme.test", "member-password-1", "/system-settings/api-keys")
        keys = c.get(root + "/system-settings/api-keys").text
        csrf = CSRF_RE.search(keys).group(1)  # type: ignore[union-attr]
        assert post(c, esc, root + "/system-settings/api-keys/ask-admin", csrf, note="please").startswith(
            root + "/system-settings/api-keys"
        )

        # -- the admin walks every page, then acts through the forms
        login(c, esc, root, "admin@acme.test", "admin-password-1", "/system-settings/roles")
        csrf = CSRF_RE.search(c.get(root + "/system-settings").text).group(1)  # type: ignore[union-attr]
        role = post(c, esc, root + "/system-settings/roles", csrf, name="Auditors")
        role_id = re.search(r"/roles/(\d+)", role).group(1)  # type: ignore[union-attr]
        post(c, esc, f"{root}/system-settings/roles/{role_id}", csrf, permissions=["users.read"])
        # Adding a member shows its one-time invitation link on the page (201, no redirect): under the prefix too.
        added = c.post(
            root + "/system-settings/users", data={"email": "new@acme.test", "roles": [role_id], "csrf_token": csrf}
        )
        assert added.status_code == 201, added.text[:300]
        esc.page("POST /system-settings/users", added.text)
        invitation = re.search(r'https?://[^"<\s]+/invitations/[^"<\s]+', added.text)
        assert invitation is not None and urlsplit(invitation.group(0)).path.startswith(root + "/invitations/")
        shown = post(c, esc, root + "/system-settings/api-keys", csrf, name="Mine", scopes=["users.read"], expiry="30")
        esc.page(shown, c.get(shown).text)  # the one page showing the new token
        pages = walk(c, esc, root + "/system-settings")
        for path in list(pages):
            if "/activity" in path:
                break
        else:
            pytest.fail("the walk never reached a token's Activity page")
        for action in sorted({a for a in esc.seen if a.endswith("/revoke")}):
            post(c, esc, action, csrf)
        post(c, esc, root + "/system-settings/notifications/read-all", csrf)
        missing = c.get(root + "/system-settings/roles/999999")
        assert missing.status_code == 404
        esc.page("a missing role", missing.text)
        assert post(c, esc, root + "/logout", csrf) == root + "/login"

    assert not esc.outside, "addresses outside the prefix:\n" + "\n".join(sorted(set(esc.outside)))
    expected = {
        root + p
        for p in (
            "/system-settings",
            "/system-settings/roles",
            "/system-settings/users",
            "/system-settings/api-keys",
            "/system-settings/tokens",
            "/system-settings/token-policy",
            "/system-settings/notifications",
            "/static/app.css",
            "/static/app.js",
            "/brand.css",
            "/login",
            "/logout",
            "/api/v1/admin/tokens/export",
        )
    }
    assert expected <= esc.seen, f"the walk missed {sorted(expected - esc.seen)}"
    assert any(re.fullmatch(rf"{root}/system-settings/(api-keys|tokens)/\d+/revoke", p) for p in esc.seen)
    assert any(re.fullmatch(rf"{root}/system-settings/requests/\d+/grant", p) for p in esc.seen)


def test_routes_answer_under_the_prefix_and_only_health_at_the_root_too(client: TestClient, world: World) -> None:
    for path in ("/healthz", "/livez", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200, path
        assert client.get(PREFIX + path).status_code == 200, PREFIX + path
    for path in (
        "/system-settings",
        "/login",
        "/api/v1/me",
        "/auth/check",
        "/openapi.json",
        "/docs",
        "/static/app.css",
        "/",
    ):
        r = client.get(path)
        assert r.status_code == 404, path
        error = r.json()["error"]
        assert error["code"] == "not_found" and "/kbai/" in error["message"], error
    assert client.post("/api/v1/session", json={"email": "admin@acme.test", "password": "x"}).status_code == 404
    bare = client.get(PREFIX + "?x=1")
    assert bare.status_code == 308 and bare.headers["location"] == PREFIX + "/?x=1"
    assert client.get(PREFIX + "/").headers["location"] == PREFIX + "/system-settings"
    assert client.get(PREFIX + "/static/app.css").status_code == 200
    assert client.get(PREFIX + "/docs").status_code == 200 and client.get(PREFIX + "/redoc").status_code == 200
    assert client.get(PREFIX + "/docs/assets/swagger-ui-bundle.js").status_code == 200
    # A neighbour of the prefix is not under it.
    assert client.get("/kbaiother/system-settings").status_code == 404


def test_session_cookie_path_is_the_prefix_and_api_login_works_under_it(client: TestClient, world: World) -> None:
    r = client.post(PREFIX + "/api/v1/session", json={"email": "dev@acme.test", "password": "dev-password-1"})
    assert r.status_code == 200, r.text
    (cookie,) = [h for h in r.headers.get_list("set-cookie") if h.startswith("kbai_session=")]
    assert re.search(r"(?i);\s*path=/kbai(;|$)", cookie), cookie
    me = client.get(PREFIX + "/api/v1/me")
    assert me.status_code == 200 and me.json()["user"]["email"] == "dev@acme.test"
    out = client.delete(PREFIX + "/api/v1/session", headers={"X-CSRF-Token": r.json()["csrf_token"]})
    assert out.status_code == 204
    assert re.search(r"(?i);\s*path=/kbai(;|$)", out.headers["set-cookie"]), out.headers["set-cookie"]


def test_auth_check_answers_under_the_prefix(client: TestClient, world: World) -> None:
    _view, plaintext = world.services.tokens.create(world.dev, "gateway", ["users.read"], expires_in_days=30)
    ok = client.get(
        PREFIX + "/auth/check", params={"scope": "users.read"}, headers={"Authorization": f"Bearer {plaintext}"}
    )
    assert ok.status_code == 200 and ok.headers["x-kbai-scopes"] == "users.read"
    assert (
        client.get(
            PREFIX + "/auth/check/some/original/path", headers={"Authorization": f"Bearer {plaintext}"}
        ).status_code
        == 200
    )
    assert client.get(PREFIX + "/auth/check").status_code == 401
    assert client.get("/auth/check", headers={"Authorization": f"Bearer {plaintext}"}).status_code == 404


def test_openapi_servers_entry_is_the_public_url(client: TestClient) -> None:
    doc = client.get(PREFIX + "/openapi.json").json()
    assert doc["servers"] == [{"url": PUBLIC, "description": doc["servers"][0]["description"]}]
    docs = client.get(PREFIX + "/docs").text
    assert 'data-openapi-url="/kbai/openapi.json"' in docs
    assert all(v.startswith("/kbai/") for _a, v in ATTRS.findall(docs)), ATTRS.findall(docs)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_without_a_path_the_openapi_servers_entry_stays_the_root(database_url: str) -> None:
    svc = Services.build(Settings(database_url=database_url, public_url="https://kbai.example.com/", **FAST_ARGON2))
    try:
        with TestClient(create_app(svc, start_background=False), follow_redirects=False) as c:
            assert c.get("/openapi.json").json()["servers"][0]["url"] == "/"
            assert c.get("/").headers["location"] == "/system-settings"
            assert c.get("/kbai/system-settings").status_code == 404
    finally:
        svc.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_email_links_are_the_full_address(database_url: str) -> None:
    svc = Services.build(Settings(database_url=database_url, public_url=PUBLIC + "/", **FAST_ARGON2))
    plain = Services.build(Settings(database_url=database_url, **FAST_ARGON2))
    try:
        assert svc.notifications.email_footer.endswith(f"({PUBLIC}/system-settings/api-keys).\n")
        assert plain.notifications.email_footer.endswith("(/system-settings/api-keys).\n")
    finally:
        svc.close()
        plain.close()


@pytest.mark.parametrize(
    "given, kept, prefix",
    [
        ("https://app.example.com/kbai", "https://app.example.com/kbai", "/kbai"),
        ("https://app.example.com/kbai/", "https://app.example.com/kbai", "/kbai"),
        ("http://127.0.0.1:8080/apps/kbai", "http://127.0.0.1:8080/apps/kbai", "/apps/kbai"),
        ("https://kbai.example.com", "https://kbai.example.com", ""),
        ("https://kbai.example.com/", "https://kbai.example.com", ""),
        ("  ", None, ""),
    ],
)
def test_public_url_is_normalised(given: str, kept: str | None, prefix: str) -> None:
    s = Settings(public_url=given)
    assert s.public_url == kept and s.path_prefix == prefix


@pytest.mark.parametrize(
    "bad",
    [
        "app.example.com/kbai",
        "ftp://app.example.com/kbai",
        "https:///kbai",
        "https://app.example.com/kbai?x=1",
        "https://app.example.com/kbai#top",
        "https://user:pw@app.example.com/kbai",
        "https://app.example.com//kbai",
        "https://app.example.com/a/../kbai",
        "https://app.example.com/k bai",
        "https://app.example.com/k%2fbai",
        'https://app.example.com/"><script>',
        "https://app.example.com:99999999/kbai",
        "https://exa\u00e9mple.com/kbai",
    ],
)
def test_a_bad_public_url_is_refused_with_a_clear_message(bad: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(public_url=bad)
    assert "KBAI_PUBLIC_URL must be an http:// or https:// URL" in str(caught.value)


def test_templates_build_every_address_with_the_url_helper() -> None:
    """A page address written as a literal root-relative path would escape the prefix: templates use url()."""
    literal = re.compile(r'\b(?:href|action|src)="/')
    found = [
        f"{t.name}: {line.strip()[:120]}"
        for t in sorted(TEMPLATES.glob("*.html"))
        for line in t.read_text().splitlines()
        if literal.search(line)
    ]
    assert not found, "use {{ url('/...') }} for these:\n" + "\n".join(found)


ESCAPING_NEXT = [
    "/system-settings/users",
    "//evil.example/kbai/x",
    "/kbai//evil.example/x",
    "/kbaiother/x",
    "https://evil.example/kbai/x",
    "/kbai/../system-settings",
    "/kbai/%2e%2e/x",
    "/kbai/./x",
    "/kbai/\\evil.example",
    "/kbai/x\r\nSet-Cookie: a=b",
    "kbai/system-settings",
    "/kbai",
]


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("nxt", ESCAPING_NEXT)
def test_a_next_outside_the_prefix_goes_home_under_it(client: TestClient, world: World, nxt: str) -> None:
    form = client.get(PREFIX + "/login", params={"next": nxt})
    assert form.status_code == 200
    kept = re.search(r'name="next" value="([^"]*)"', form.text)
    assert kept is not None and kept.group(1) == PREFIX + "/system-settings", kept
    r = client.post(
        PREFIX + "/login",
        data={
            "email": "dev@acme.test",
            "password": "dev-password-1",
            "next": nxt,
            "csrf_token": CSRF_RE.search(form.text).group(1),
        },
    )  # type: ignore[union-attr]
    assert r.status_code == 303 and r.headers["location"] == PREFIX + "/system-settings", r.headers.get("location")
    # Signed in, the login page and the OIDC start send the same values home too.
    again = client.get(PREFIX + "/login", params={"next": nxt})
    assert again.status_code == 303 and again.headers["location"] == PREFIX + "/system-settings"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_next_under_the_prefix_is_kept(client: TestClient, world: World) -> None:
    form = client.get(PREFIX + "/login", params={"next": "/kbai/system-settings/tokens?owner=a%40b"})
    kept = re.search(r'name="next" value="([^"]*)"', form.text)
    assert kept is not None and kept.group(1) == "/kbai/system-settings/tokens?owner=a%40b"


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    "path",
    [
        "/kbai/../system-settings",
        "/kbai/%2e%2e/system-settings",
        "/kbai/..%2fapi/v1/me",
        "/KBAI/system-settings",
        "/kbai./system-settings",
    ],
)
def test_odd_paths_near_the_prefix_are_a_clear_404(client: TestClient, world: World, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code)
    assert r.headers["content-type"].startswith(("application/json", "text/html"))
    assert "Traceback" not in r.text


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("path", ["/kbai/auth/check?scope=users.read", "/kbai/api/v1/me"])
def test_warm_requests_under_the_prefix_cost_no_sql(services: Services, world: World, path: str) -> None:
    """The prefix adds no I/O to the hot path: warm requests under it send no SQL statement."""
    from tests.gateway.test_warm_io import sql_statements

    _view, plaintext = services.tokens.create(world.dev, "warm", ["users.read"], expires_in_days=30)
    headers = {"Authorization": f"Bearer {plaintext}"}
    with TestClient(create_app(services)) as c:  # background parts started, as `kbai serve` runs it
        assert c.get(path, headers=headers).status_code == 200  # loads the record once
        with sql_statements() as sql:
            statuses = {c.get(path, headers=headers).status_code for _ in range(200)}
    assert statuses == {200}
    assert sql == [], f"{len(sql)} SQL statements in 200 warm requests under the prefix, e.g. {sql[:3]}"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_kbai_serve_stops_at_start_up_on_a_bad_public_url(database_url: str) -> None:
    import subprocess

    from tests.conftest import KBAI_BIN, server_env

    proc = subprocess.run(
        [KBAI_BIN, "serve", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=server_env(database_url, KBAI_PUBLIC_URL="https://app.example.com/kbai?x=1"),
    )
    assert proc.returncode == 1
    assert "setting KBAI_PUBLIC_URL: KBAI_PUBLIC_URL must be an http:// or https:// URL" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_notifications_link_in_the_api_is_under_the_prefix(client: TestClient, world: World) -> None:
    from kbai.access.requests import AdminRequests

    svc = world.services
    role = svc.access.create_role(world.admin, world.tenant_id, "Readers", ["users.read"])
    svc.access.create_user(world.admin, world.tenant_id, "reader@acme.test", "reader-password-1", [role.id])
    requests = AdminRequests(svc.access, svc.notifications)
    requests.ask(world.actor("reader@acme.test"), "developer.manage_tokens")
    (pending,) = requests.pending(world.admin)
    requests.grant(world.admin, pending.id, role.id)
    login = client.post(PREFIX + "/api/v1/session", json={"email": "reader@acme.test", "password": "reader-password-1"})
    assert login.status_code == 200, login.text
    (granted,) = [
        n for n in client.get(PREFIX + "/api/v1/notifications").json()["notifications"] if n["kind"] == "access.granted"
    ]
    assert granted["details"]["link"] == "/kbai/system-settings/api-keys"
