"""Issue 3: a real nginx running the shipped deploy/nginx/kbai.conf in front of a small upstream app.

The test renders that very file with its own ports (only the three CHANGE ME addresses are
replaced), runs nginx in the foreground with a private prefix directory, and checks what a client
and the upstream app see: identity headers on success, 401/403 with kbai's WWW-Authenticate on
refusal, and the upstream never reached by a refused request.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, free_port, missing_service, start_server
from tests.gateway.helpers import Created, Seeded, bearer, create_token, login, seed

pytestmark = pytest.mark.nginx

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONF = REPO / "deploy" / "nginx" / "kbai.conf"
ECHO = Path(__file__).with_name("echo_upstream.py")
PERMISSIONS_TOML = """
[groups.Contacts]
"contacts.read" = "Read contacts"
"contacts.write" = "Edit contacts"
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None
    )


def render(conf: str, *, kbai_port: int, app_port: int, listen_port: int) -> str:
    """The shipped config with the test's ports; each CHANGE ME line must be found exactly once."""
    replacements = {
        "server 127.0.0.1:8000;  # CHANGE ME": f"server 127.0.0.1:{kbai_port};  # CHANGE ME",
        "server 127.0.0.1:9000;  # CHANGE ME": f"server 127.0.0.1:{app_port};  # CHANGE ME",
        "listen 127.0.0.1:8080;  # CHANGE ME": f"listen 127.0.0.1:{listen_port};  # CHANGE ME",
    }
    for old, new in replacements.items():
        assert conf.count(old) == 1, f"deploy/nginx/kbai.conf no longer has exactly one '{old}' line"
        conf = conf.replace(old, new)
    return conf


def wait_until_up(url: str, proc: subprocess.Popen[bytes], what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            detail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}: {detail}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Stack:
    nginx_url: str
    kbai: LiveServer
    seeded: Seeded
    contacts_reader: Created  # contacts.read + users.read
    users_reader: Created  # users.read only
    error_log: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Stack]:
    nginx = nginx_binary()
    if nginx is None:
        missing_service("nginx")
    assert nginx is not None
    tmp = tmp_path_factory.mktemp("nginx-stack")
    db_path = tmp / "kbai.db"
    shutil.copy(sqlite_template, db_path)
    database_url = f"sqlite:///{db_path}"
    permissions = tmp / "permissions.toml"
    permissions.write_text(PERMISSIONS_TOML)
    seeded = seed(database_url, permissions, extra_dev_permissions=("contacts.read",))

    kbai = start_server(database_url, tmp, KBAI_PERMISSIONS_FILE=str(permissions))
    app_port, listen_port = free_port(), free_port()
    echo = subprocess.Popen([sys.executable, str(ECHO), str(app_port)], start_new_session=True)
    nginx_proc: subprocess.Popen[bytes] | None = None
    try:
        wait_until_up(f"http://127.0.0.1:{app_port}/", echo, "the echo upstream")
        with kbai.client() as c:
            csrf = login(c)
            contacts_reader = create_token(c, csrf, "contacts", ["contacts.read", "users.read"])
            users_reader = create_token(c, csrf, "users", ["users.read"])

        prefix = tmp / "nginx"
        (prefix / "logs").mkdir(parents=True)
        conf = prefix / "kbai.conf"
        kbai_port = int(kbai.url.rsplit(":", 1)[1])
        rendered = render(SHIPPED_CONF.read_text(), kbai_port=kbai_port, app_port=app_port, listen_port=listen_port)
        # IPv6 clients too (the allowlist tests): the same server block also listens on [::1].
        rendered = rendered.replace(
            f"listen 127.0.0.1:{listen_port};",
            f"listen 127.0.0.1:{listen_port};\n        listen [::1]:{listen_port};",
            1,
        )
        conf.write_text(rendered)
        error_log = prefix / "error.log"
        directives = f"daemon off; pid {prefix}/nginx.pid; error_log {error_log} info;"
        if os.geteuid() == 0:
            # As root nginx would run its workers as "nobody", who cannot enter pytest's 0700 tmp dirs.
            directives += f" user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};"
        test = subprocess.run(
            [nginx, "-t", "-p", str(prefix), "-c", str(conf), "-g", directives],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert test.returncode == 0, f"nginx -t rejects the shipped config: {test.stderr}"
        nginx_proc = subprocess.Popen(
            [nginx, "-p", str(prefix), "-c", str(conf), "-g", directives],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        nginx_url = f"http://127.0.0.1:{listen_port}"
        wait_until_up(nginx_url + "/", nginx_proc, "nginx", error_log)
        yield Stack(nginx_url, kbai, seeded, contacts_reader, users_reader, error_log)
    finally:
        if nginx_proc is not None:
            stop(nginx_proc)
        stop(echo)
        kbai.stop()


def get(stack: Stack, path: str, token: str | None = None, **headers: str) -> httpx.Response:
    sent = {**headers, **(bearer(token) if token is not None else {})}
    return httpx.get(stack.nginx_url + path, headers=sent, timeout=30)


def upstream_headers(r: httpx.Response) -> dict[str, list[str]]:
    body = r.json()
    assert body.get("upstream") == "echo", "the response did not come from the upstream app"
    return body["headers"]  # type: ignore[no-any-return]


def assert_refused_by_nginx(r: httpx.Response, status: int, error: str | None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert "upstream" not in body, "a refused request reached the upstream app"
    challenges = r.headers.get_list("www-authenticate")
    assert len(challenges) == 1, f"expected one WWW-Authenticate header, got {challenges}"
    assert challenges[0].startswith("Bearer ")
    if error is not None:
        assert f'error="{error}"' in challenges[0]
    assert "error" in body and "code" in body["error"] and "message" in body["error"]


def test_valid_token_reaches_upstream_with_identity_headers(stack: Stack) -> None:
    r = get(stack, "/orders?page=2", stack.users_reader.plaintext)
    assert r.status_code == 200, r.text
    seen = upstream_headers(r)
    assert r.json()["path"] == "/orders?page=2"
    assert seen["x-kbai-user"] == [str(stack.seeded.dev_id)]
    assert seen["x-kbai-user-email"] == ["dev@acme.test"]
    assert seen["x-kbai-tenant"] == [str(stack.seeded.tenant_id)]
    assert seen["x-kbai-scopes"] == ["users.read"]
    assert seen["x-kbai-token-id"] == [str(stack.users_reader.id)]
    # The token itself is checked at the edge and not handed on to the app.
    assert "authorization" not in seen

    r = get(stack, "/orders", stack.contacts_reader.plaintext)
    assert r.status_code == 200, r.text
    seen = upstream_headers(r)
    assert seen["x-kbai-scopes"] == ["users.read contacts.read"]
    assert seen["x-kbai-token-id"] == [str(stack.contacts_reader.id)]


def test_client_cannot_forge_identity_headers(stack: Stack) -> None:
    r = get(
        stack,
        "/orders",
        stack.users_reader.plaintext,
        **{"X-Kbai-User": "999", "X-Kbai-Tenant": "999", "X-Kbai-Scopes": "users.manage", "X-Kbai-Token-Id": "1"},
    )
    assert r.status_code == 200, r.text
    seen = upstream_headers(r)
    assert seen["x-kbai-user"] == [str(stack.seeded.dev_id)]
    assert seen["x-kbai-tenant"] == [str(stack.seeded.tenant_id)]
    assert seen["x-kbai-scopes"] == ["users.read"]
    assert seen["x-kbai-token-id"] == [str(stack.users_reader.id)]


def test_no_authorization_is_401(stack: Stack) -> None:
    r = get(stack, "/orders")
    assert_refused_by_nginx(r, 401, None)
    assert r.headers["www-authenticate"].startswith('Bearer realm="kbai"')


@pytest.mark.parametrize(
    "presented",
    [
        pytest.param("kbai_pk_" + "0" * 64, id="unknown"),
        pytest.param("kbai_pk_" + "A" * 64, id="upper-case"),
        pytest.param("kbai_pk_short", id="short"),
        pytest.param("not-a-token", id="garbage"),
    ],
)
def test_invalid_or_malformed_token_is_401(stack: Stack, presented: str) -> None:
    r = get(stack, "/orders", presented)
    assert_refused_by_nginx(r, 401, "invalid_token")


def test_other_auth_scheme_is_401(stack: Stack) -> None:
    r = get(stack, "/orders", Authorization="Basic dXNlcjpwYXNz")
    assert_refused_by_nginx(r, 401, "invalid_token")


def test_scope_demanded_by_a_location(stack: Stack) -> None:
    r = get(stack, "/contacts/42", stack.contacts_reader.plaintext)
    assert r.status_code == 200, r.text
    assert upstream_headers(r)["x-kbai-token-id"] == [str(stack.contacts_reader.id)]

    r = get(stack, "/contacts/42", stack.users_reader.plaintext)
    assert_refused_by_nginx(r, 403, "insufficient_scope")
    assert 'scope="contacts.read"' in r.headers["www-authenticate"]

    # The same token is fine where no scope is demanded.
    r = get(stack, "/orders", stack.users_reader.plaintext)
    assert r.status_code == 200, r.text


def test_internal_auth_location_is_not_reachable(stack: Stack) -> None:
    for path in ("/_kbai_auth", "/_kbai_auth_contacts_read"):
        r = get(stack, path, stack.users_reader.plaintext)
        # Without `internal` this would be kbai's own /auth/check answer ({"active": true}, 200).
        assert r.status_code == 404, r.text


def test_revoked_token_is_401_on_the_next_request(stack: Stack) -> None:
    with stack.kbai.client() as c:
        csrf = login(c)
        doomed = create_token(c, csrf, "doomed", ["users.read"])
        r = get(stack, "/orders", doomed.plaintext)
        assert r.status_code == 200, r.text
        r = c.post(f"/api/v1/tokens/{doomed.id}/revoke", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text
    r = get(stack, "/orders", doomed.plaintext)
    assert_refused_by_nginx(r, 401, "invalid_token")
    assert "revoked" in r.headers["www-authenticate"]


def test_nginx_error_log_has_no_full_token(stack: Stack) -> None:
    get(stack, "/orders", stack.users_reader.plaintext)
    text = stack.error_log.read_text() if stack.error_log.exists() else ""
    leaked = stack.users_reader.plaintext in text or stack.contacts_reader.plaintext in text
    assert not leaked, "nginx's error log contains a full token"


# ---- per-token IP allowlists, judged on the client address nginx saw ----------------------------------
def _from(source: str, url: str, token: str, **headers: str) -> httpx.Response:
    """GET ``url`` from the local address ``source`` (127.0.0.2, 127.0.0.3 ... are all loopback on Linux)."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=30) as client:
        return client.get(url, headers={**headers, **bearer(token)})


def _allowlisted(stack: Stack, name: str, allowed: list[str]) -> Created:
    with stack.kbai.client() as c:
        csrf = login(c)
        return create_token(c, csrf, name, ["users.read"], allowed_ips=allowed)


def test_allowlist_through_nginx_inside_passes_outside_is_refused(stack: Stack) -> None:
    token = _allowlisted(stack, "office only", ["127.0.0.2/32"])
    port = stack.nginx_url.rsplit(":", 1)[1]
    inside = _from("127.0.0.2", f"http://127.0.0.1:{port}/orders", token.plaintext)
    assert inside.status_code == 200, inside.text
    assert upstream_headers(inside)["x-kbai-token-id"] == [str(token.id)]
    outside = _from("127.0.0.3", f"http://127.0.0.1:{port}/orders", token.plaintext)
    assert_refused_by_nginx(outside, 401, "invalid_token")
    # The refusal says what to do, never where the token may be used from.
    assert "127.0.0.2" not in outside.text and "127.0.0.2" not in outside.headers["www-authenticate"]
    assert "cannot be used from this address" in outside.headers["www-authenticate"]


def test_a_spoofed_forwarded_header_is_judged_by_the_real_peer(stack: Stack) -> None:
    token = _allowlisted(stack, "spoof target", ["127.0.0.2/32"])
    port = stack.nginx_url.rsplit(":", 1)[1]
    # Through nginx: it sets X-Forwarded-For to the peer it saw, whatever the client claims.
    spoofed = _from(
        "127.0.0.3",
        f"http://127.0.0.1:{port}/orders",
        token.plaintext,
        **{"X-Forwarded-For": "127.0.0.2", "X-Real-IP": "127.0.0.2"},
    )
    assert_refused_by_nginx(spoofed, 401, "invalid_token")
    # Straight to kbai from a peer that is not a trusted proxy (KBAI_TRUSTED_PROXIES is 127.0.0.1,::1):
    # the header is ignored and the peer's own address decides.
    direct = _from("127.0.0.3", stack.kbai.url + "/auth/check", token.plaintext, **{"X-Forwarded-For": "127.0.0.2"})
    assert direct.status_code == 401, direct.text
    # From the trusted proxy address the same header is believed.
    trusted = _from("127.0.0.1", stack.kbai.url + "/auth/check", token.plaintext, **{"X-Forwarded-For": "127.0.0.2"})
    assert trusted.status_code == 200, trusted.text


def test_allowlist_through_nginx_over_ipv6(stack: Stack) -> None:
    port = stack.nginx_url.rsplit(":", 1)[1]
    v6_only = _allowlisted(stack, "v6 only", ["::1/128"])
    elsewhere = _allowlisted(stack, "v6 elsewhere", ["2001:db8::/32"])
    r = httpx.get(f"http://[::1]:{port}/orders", headers=bearer(v6_only.plaintext), timeout=30)
    assert r.status_code == 200, r.text
    assert upstream_headers(r)["x-kbai-token-id"] == [str(v6_only.id)]
    assert_refused_by_nginx(
        httpx.get(f"http://127.0.0.1:{port}/orders", headers=bearer(v6_only.plaintext), timeout=30),
        401,
        "invalid_token",
    )
    assert_refused_by_nginx(
        httpx.get(f"http://[::1]:{port}/orders", headers=bearer(elsewhere.plaintext), timeout=30), 401, "invalid_token"
    )
