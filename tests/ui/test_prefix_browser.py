"""kbai under /kbai behind a real nginx (issue 14): the help page's whole journey in Chromium, on both backends.

nginx runs the `location /kbai/` block of docs/integration.md as written (only the upstream's port and the
listen line change) in front of a real `kbai serve` with KBAI_PUBLIC_URL=http://127.0.0.1:PORT/kbai. The
admin is sent to the login page on the way to Roles and comes back there, grants Manage API Tokens, logs
out; the developer opens API Keys, creates a token, uses it through nginx (API and /auth/check), revokes
it. Every request the browser made, every redirect's Location and every cookie's Path stayed under
/kbai; the health routes answer through both kbai's prefix and its root. Swagger UI and ReDoc load under
/kbai, and Swagger's "Try it out" calls the OpenAPI servers entry (KBAI_PUBLIC_URL) through nginx.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kbai import tokenformat as fmt
from kbai.services import Services
from tests.conftest import LiveServer, free_port, missing_service, start_server
from tests.gateway.test_nginx import nginx_binary, stop, wait_until_up
from tests.ui.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    DESKTOP,
    DEV_EMAIL,
    DEV_PASSWORD,
    confirm_dialog,
    seed_acme,
    shot,
)

pytestmark = [pytest.mark.browser, pytest.mark.nginx]

DOC = Path(__file__).resolve().parents[2] / "docs" / "integration.md"


def documented_config(kbai_port: int, listen_port: int) -> str:
    """The nginx block of docs/integration.md's "Serving kbai under your product's address", made runnable."""
    blocks = re.findall(r"```nginx\n(.*?)```", DOC.read_text(), re.S)
    (snippet,) = [b for b in blocks if "location /kbai/" in b]
    for old, new in (
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{kbai_port};"),
        ("listen 443 ssl;", f"listen 127.0.0.1:{listen_port};"),
    ):
        assert snippet.count(old) == 1, f"docs/integration.md's nginx block no longer has one '{old}'"
        snippet = snippet.replace(old, new)
    return f"events {{}}\nhttp {{\naccess_log off;\n{snippet}\n}}\n"


@dataclass
class Proxied:
    url: str  # nginx, e.g. http://127.0.0.1:PORT
    kbai: LiveServer


@pytest.fixture
def proxied(database_url: str, tmp_path: Path) -> Iterator[Proxied]:
    nginx = nginx_binary()
    if nginx is None:
        missing_service("nginx")
    assert nginx is not None
    listen_port = free_port()
    url = f"http://127.0.0.1:{listen_port}"
    kbai = start_server(database_url, tmp_path, KBAI_PUBLIC_URL=url + "/kbai", KBAI_LAST_USED_FLUSH_SECONDS="0.5")
    proc: subprocess.Popen[bytes] | None = None
    try:
        prefix = tmp_path / "nginx"
        (prefix / "logs").mkdir(parents=True)
        conf = prefix / "nginx.conf"
        conf.write_text(documented_config(int(kbai.url.rsplit(":", 1)[1]), listen_port))
        error_log = prefix / "error.log"
        directives = f"daemon off; pid {prefix}/nginx.pid; error_log {error_log} info;"
        if os.geteuid() == 0:  # as root nginx would run its workers as "nobody", who cannot enter tmp dirs
            directives += f" user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};"
        test = subprocess.run(
            [nginx, "-t", "-p", str(prefix), "-c", str(conf), "-g", directives],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert test.returncode == 0, f"nginx -t rejects the documented block: {test.stderr}"
        proc = subprocess.Popen(
            [nginx, "-p", str(prefix), "-c", str(conf), "-g", directives],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until_up(url + "/kbai/healthz", proc, "nginx", error_log)
        yield Proxied(url, kbai)
    finally:
        if proc is not None:
            stop(proc)
        kbai.stop()


class Watch:
    """Every request a browser page makes, every redirect Location it follows."""

    def __init__(self, page: object, under: str) -> None:
        self.under = under
        self.outside: list[str] = []
        self.requests = 0
        page.on("request", self._request)  # type: ignore[attr-defined]
        page.on("response", self._response)  # type: ignore[attr-defined]

    def _request(self, request: object) -> None:
        url: str = request.url  # type: ignore[attr-defined]
        self.requests += 1
        if not url.startswith(("data:", "blob:")) and not url.startswith(self.under):
            self.outside.append(f"request {url}")

    def _response(self, response: object) -> None:
        if 300 <= response.status < 400:  # type: ignore[attr-defined]
            location = response.headers.get("location", "")  # type: ignore[attr-defined]
            if not location.startswith("/kbai/"):
                self.outside.append(f"Location {location} (from {response.url})")  # type: ignore[attr-defined]
            nxt = re.search(r"[?&]next=([^&]*)", location)
            if nxt and not nxt.group(1).replace("%2F", "/").startswith("/kbai/"):
                self.outside.append(f"next={nxt.group(1)} (from {response.url})")  # type: ignore[attr-defined]


def open_page(browser: object, proxied: Proxied):  # type: ignore[no-untyped-def]
    context = browser.new_context(
        base_url=proxied.url,
        viewport=DESKTOP,  # type: ignore[attr-defined]
        permissions=["clipboard-read", "clipboard-write"],
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    return page, Watch(page, proxied.url + "/kbai/")


def log_in(page, email: str, password: str, going_to: str) -> None:  # type: ignore[no-untyped-def]
    page.goto("/kbai" + going_to)
    # (home needs no next=)
    nxt = "" if going_to == "/system-settings" else r"\?next=/kbai" + re.escape(going_to)
    page.wait_for_url(re.compile(r".*/kbai/login" + nxt + "$"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(".*/kbai" + re.escape(going_to) + "$"))


def cookie_paths(page) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {c["name"]: c["path"] for c in page.context.cookies()}


def test_help_page_journey_under_kbai_behind_nginx(
    browser: object, proxied: Proxied, ui_services: Services, backend: str
) -> None:
    acme = seed_acme(ui_services)
    base = proxied.url + "/kbai"

    # -- the admin, on the way to Roles: the login page, back to Roles, the role, Manage API Tokens, Save
    admin, watch_admin = open_page(browser, proxied)
    log_in(admin, ADMIN_EMAIL, ADMIN_PASSWORD, "/system-settings/roles")
    assert cookie_paths(admin)["kbai_session"] == "/kbai"
    admin.get_by_role("link", name="Developers", exact=True).click()
    admin.wait_for_url(f"{base}/system-settings/roles/{acme.role_id}")
    admin.get_by_role("group", name="Developer").get_by_label("Manage API Tokens").check()
    admin.get_by_role("button", name="Save").click()
    admin.get_by_text("Saved.").wait_for()
    assert admin.url.startswith(f"{base}/system-settings/roles/{acme.role_id}")
    admin.get_by_role("navigation", name="System Settings").get_by_role("link", name="Overview").click()
    admin.wait_for_url(f"{base}/system-settings")
    admin.get_by_role("button", name="Log out").click()
    admin.wait_for_url(f"{base}/login")
    assert "kbai_session" not in cookie_paths(admin)

    # -- the developer: System Settings, Open API Keys, create a token
    page, watch = open_page(browser, proxied)
    log_in(page, DEV_EMAIL, DEV_PASSWORD, "/system-settings")
    page.get_by_role("region", name="Developer API").get_by_role("link", name="Open API Keys").click()
    page.wait_for_url(f"{base}/system-settings/api-keys")
    page.get_by_label("Name").fill("Behind nginx")
    page.get_by_label("View users").check()
    page.get_by_role("button", name="Create token").click()
    card = page.get_by_role("region", name=re.compile("Token .Behind nginx. created"))
    card.wait_for()
    token = page.locator("#new-token").inner_text().strip()
    well_formed = fmt.is_well_formed(token)
    assert well_formed, "the page shows a kbai_pk_ token"
    accent = page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--accent')")
    assert accent.strip(), "app.css (under /kbai/static) did not load"
    if backend == "sqlite":
        page.evaluate("m => { document.querySelector('#new-token').textContent = m; }", "kbai_pk_" + "0" * 64)
        shot(page, "prefix-api-keys-created")

    # -- the token works through nginx, under the prefix: the API and the forward-auth check
    with httpx.Client(base_url=base, timeout=10) as api:
        me = api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200 and me.json()["user"]["email"] == DEV_EMAIL
        check = api.get("/auth/check", params={"scope": "users.read"}, headers={"Authorization": f"Bearer {token}"})
        assert check.status_code == 200 and check.headers["x-kbai-scopes"] == "users.read"
        doc = api.get("/openapi.json").json()
        assert doc["servers"][0]["url"] == base
        assert api.get("/docs").status_code == 200

    # -- "I've stored it safely", the table, revoke with the confirmation
    card.get_by_role("link", name="I've stored it safely, done").click()
    page.wait_for_url(f"{base}/system-settings/api-keys")
    row = page.locator("table.tokens-table tbody tr", has_text="Behind nginx")
    row.get_by_role("button", name=re.compile("^Revoke")).click()
    confirm_dialog(page)
    page.get_by_text(re.compile("^Token “Behind nginx” .* revoked")).wait_for()
    assert page.url.startswith(f"{base}/system-settings/api-keys")
    with httpx.Client(base_url=base, timeout=10) as api:
        assert api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401

    # -- the token's Activity page and back through the breadcrumbs
    page.locator("table.tokens-table tbody tr", has_text="Behind nginx").get_by_role(
        "link", name=re.compile("^Activity")
    ).click()
    page.wait_for_url(re.compile(re.escape(base) + r"/system-settings/api-keys/\d+/activity$"))
    page.get_by_role("navigation", name="Breadcrumb").get_by_role("link", name="API Keys").click()
    page.wait_for_url(f"{base}/system-settings/api-keys")

    for watched in (watch_admin, watch):
        assert watched.requests > 10
        assert not watched.outside, "left the prefix:\n" + "\n".join(watched.outside)
    assert all(path.startswith("/kbai") for path in cookie_paths(page).values()), cookie_paths(page)
    page.context.close()
    admin.context.close()

    # -- health answers at kbai's root as well as under the prefix; nothing else does at the root
    for path in ("/healthz", "/livez", "/readyz", "/metrics"):
        assert httpx.get(proxied.kbai.url + path, timeout=10).status_code == 200, path
        assert httpx.get(base + path, timeout=10).status_code == 200, path
    assert httpx.get(proxied.kbai.url + "/system-settings", timeout=10).status_code == 404


@pytest.mark.parametrize("backend", ["sqlite"])
def test_api_docs_under_kbai_behind_nginx_load_and_try_it_out_stays_under_it(browser: object, proxied: Proxied) -> None:
    page, watch = open_page(browser, proxied)
    page.goto("/kbai/docs")
    page.locator(".opblock-summary-description", has_text="Create a token").first.wait_for(timeout=60_000)
    servers = page.locator(".servers select, .servers")
    assert proxied.url + "/kbai" in servers.first.inner_text(), "the servers entry is KBAI_PUBLIC_URL"
    live = page.locator(".opblock", has=page.locator(".opblock-summary-path", has_text="/livez")).first
    live.locator(".opblock-summary").click()
    live.get_by_role("button", name="Try it out").click()
    live.get_by_role("button", name="Execute").click()
    live.locator(".request-url pre").wait_for()
    assert live.locator(".request-url pre").inner_text().strip() == proxied.url + "/kbai/livez"
    status = live.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip() == "200"
    page.goto("/kbai/redoc")
    page.get_by_role("heading", name="Create a token").first.wait_for(timeout=60_000)
    assert watch.requests > 3
    assert not watch.outside, "left the prefix:\n" + "\n".join(watch.outside)
    page.context.close()
