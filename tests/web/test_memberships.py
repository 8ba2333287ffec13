"""Issue 14 "People in several tenants" and issue 13 finding 7, against a real `kbai serve` on both backends.

One person (dev@...) is a member of two tenants. Tokens belong to one membership and act only in its tenant;
`X-Kbai-User`, introspection's `sub` and `/api/v1/me`'s `user.id` are the person's id (the same for both),
`X-Kbai-Tenant` says which tenant. Each test makes its own tenants, so they share one server per backend.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client

from kbai.config import Settings
from kbai.services import Services
from tests.conftest import FAST_ARGON2, OPERATOR, LiveServer, run_coroutine, start_server
from tests.gateway.helpers import bearer, create_service_credential, create_token

DEVS = ["developer.manage_tokens", "users.read", "roles.read"]


@dataclass(frozen=True)
class Stack:
    server: LiveServer
    database_url: str
    client_id: str
    client_secret: str


@pytest.fixture(scope="module")
def stack(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    client_id, client_secret = create_service_credential(module_database_url, "memberships-api")
    server = start_server(module_database_url, tmp_path_factory.mktemp("memberships"))
    yield Stack(server, module_database_url, client_id, client_secret)
    server.stop()


@dataclass
class Two:
    """Tenants A and B (each with its admin and a "Devs" role); dev is a member of A only at first."""

    tag: str
    a_id: int
    b_id: int
    a_name: str
    b_name: str
    dev: str
    admin_a: str
    admin_b: str


def _two_tenants(stack: Stack) -> Two:
    tag = uuid.uuid4().hex[:8]
    svc = Services.build(Settings(database_url=stack.database_url, **FAST_ARGON2))
    try:
        ids = []
        for side in ("a", "b"):
            tenant, _, _ = svc.access.create_tenant(
                OPERATOR,
                f"T{side.upper()}-{tag}",
                f"admin@{side}-{tag}.test",
                "admin-password-1",
                external_id=f"org_{side}_{tag}",
            )
            svc.access.create_role(OPERATOR, tenant.id, "Devs", DEVS)
            ids.append(tenant.id)
        svc.access.create_user(OPERATOR, ids[0], f"dev@{tag}.test", "dev-password-1", ["Devs"])
    finally:
        svc.close()
    return Two(
        tag, ids[0], ids[1], f"TA-{tag}", f"TB-{tag}", f"dev@{tag}.test", f"admin@a-{tag}.test", f"admin@b-{tag}.test"
    )


def _login(c: httpx.Client, email: str, password: str, tenant: object = None) -> httpx.Response:
    body: dict[str, object] = {"email": email, "password": password}
    if tenant is not None:
        body["tenant"] = tenant
    return c.post("/api/v1/session", json=body)


def _csrf(r: httpx.Response) -> dict[str, str]:
    assert r.status_code == 200, r.text
    return {"X-CSRF-Token": r.json()["csrf_token"]}


def _accept(server: LiveServer, url: str, password: str) -> httpx.Client:
    """Use an invitation through its page, as its person would; returns their signed-in client."""
    c = server.client()
    path = urlsplit(url).path
    page = c.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    r = c.post(path, data={"csrf_token": found.group(1), "password": password, "password_again": password})
    assert r.status_code == 303 and r.headers["location"] == "/system-settings", r.text
    return c


def _join_b(stack: Stack, two: Two) -> httpx.Client:
    """B's admin adds dev (already a member of A) with the Devs role; dev confirms with their own password."""
    with stack.server.client() as admin:
        h = _csrf(_login(admin, two.admin_b, "admin-password-1"))
        devs = next(r["id"] for r in admin.get("/api/v1/roles").json()["roles"] if r["name"] == "Devs")
        r = admin.post("/api/v1/users", json={"email": two.dev, "roles": [devs]}, headers=h)
        assert r.status_code == 201, r.text
    return _accept(stack.server, r.json()["invitation_url"], "dev-password-1")


def _introspect(stack: Stack, token: str) -> dict[str, object]:
    with OAuth2Client(
        stack.client_id, stack.client_secret, token_endpoint_auth_method="client_secret_basic", timeout=30
    ) as client:
        r = client.introspect_token(stack.server.url + "/api/v1/introspect", token=token)
    assert r.status_code == 200
    return dict(r.json())


# ---- finding 7: emails are unique per person, and no answer reveals another tenant ----------------------
def test_finding7_adding_an_email_of_another_tenant_answers_as_for_a_new_person(stack: Stack) -> None:
    """Globex's admin adding Acme's admin got 409 "already exists" (and a new address squatted it): now both
    are 201 with the same shape, no password, a one-time invitation link, and the other tenant can still add
    the new person."""
    two = _two_tenants(stack)
    with stack.server.client() as b:
        h = _csrf(_login(b, two.admin_b, "admin-password-1"))
        existing = b.post("/api/v1/users", json={"email": two.admin_a}, headers=h)
        new = b.post("/api/v1/users", json={"email": f"nobody@{two.tag}.test"}, headers=h)
        assert existing.status_code == new.status_code == 201, (existing.text, new.text)
        assert (
            set(existing.json())
            == set(new.json())
            == {"id", "email", "roles", "active", "invitation_url", "invitation_expires_at"}
        )
        for r in (existing, new):
            assert "password" not in r.text and r.json()["roles"] == ["Member"]
            assert r.json()["invitation_url"].startswith(stack.server.url + "/invitations/")
        # Twice in the same tenant: a 409 about this tenant only.
        again = b.post("/api/v1/users", json={"email": two.admin_a}, headers=h)
        assert again.status_code == 409 and "this tenant" in again.json()["error"]["message"]
        assert two.a_name not in again.text
    with stack.server.client() as a:  # Acme adds the person Globex added first: no squatting
        h = _csrf(_login(a, two.admin_a, "admin-password-1"))
        r = a.post("/api/v1/users", json={"email": f"nobody@{two.tag}.test"}, headers=h)
        assert r.status_code == 201, r.text
    # The existing person's password did not change; B is theirs to enter once they accept B's invitation
    # (until then, no password alone opens it).
    with stack.server.client() as c:
        assert _login(c, two.admin_a, "admin-password-1", two.a_id).status_code == 200
        assert _login(c, two.admin_a, "admin-password-1", two.b_name).status_code == 401
    assert (
        _accept(stack.server, existing.json()["invitation_url"], "admin-password-1")
        .get("/api/v1/me")
        .json()["tenant"]["id"]
        == two.b_id
    )
    with stack.server.client() as c:
        assert _login(c, two.admin_a, "admin-password-1", two.b_name).status_code == 200


def test_an_admin_who_chose_a_new_persons_password_never_enters_their_other_tenants(stack: Stack) -> None:
    """The inviting admin sees the link, so may choose the password of a person new to kbai. When another tenant
    later adds that person, their membership there opens only through that tenant's own link: the password the
    first admin chose opens nothing but the first tenant."""
    two = _two_tenants(stack)
    victim = f"victim@{two.tag}.test"
    with stack.server.client() as b:
        h = _csrf(_login(b, two.admin_b, "admin-password-1"))
        squat = b.post("/api/v1/users", json={"email": victim}, headers=h).json()["invitation_url"]
    _accept(stack.server, squat, "chosen-by-admin-b-1").close()  # admin B chose the password
    with stack.server.client() as a:
        h = _csrf(_login(a, two.admin_a, "admin-password-1"))
        invited = a.post("/api/v1/users", json={"email": victim, "roles": ["Devs"]}, headers=h)
        assert invited.status_code == 201
    with stack.server.client() as attacker:
        assert _login(attacker, victim, "chosen-by-admin-b-1", two.a_id).status_code == 401
        r = _login(attacker, victim, "chosen-by-admin-b-1")
        assert r.json()["tenant"]["id"] == two.b_id and [t["id"] for t in r.json()["tenants"]] == [two.b_id]
        switched = attacker.post("/api/v1/session/tenant", json={"tenant": two.a_id}, headers=_csrf(r))
        assert switched.status_code == 404


def test_a_link_never_sets_a_password_for_someone_who_is_already_somebody(stack: Stack) -> None:
    """A person without a password (single sign-on, or made by the operator without one) who already entered a
    tenant: another tenant's link offers no password to choose, and refuses one."""
    two = _two_tenants(stack)
    sso = f"sso@{two.tag}.test"
    svc = Services.build(Settings(database_url=stack.database_url, **FAST_ARGON2))
    try:
        svc.access.create_user(OPERATOR, two.a_id, sso, generate_password=False)
    finally:
        svc.close()
    with stack.server.client() as b:
        h = _csrf(_login(b, two.admin_b, "admin-password-1"))
        url = b.post("/api/v1/users", json={"email": sso}, headers=h).json()["invitation_url"]
    c = stack.server.client()
    path = urlsplit(url).path
    page = c.get(path)
    assert "password_again" not in page.text and 'name="password"' not in page.text
    assert "You sign in with single sign-on" in page.text
    csrf = c.cookies.get("kbai_invite_csrf")  # (a form posted anyway, with the page's own CSRF pair)
    assert csrf is not None
    r = c.post(path, data={"csrf_token": csrf, "password": "taken-over-pw-1", "password_again": "x"})
    assert r.status_code == 409 and "single sign-on" in r.text and "kbai_session" not in c.cookies
    with stack.server.client() as again:
        assert _login(again, sso, "taken-over-pw-1").status_code == 401
    c.close()


def test_a_new_person_sets_a_password_through_the_invitation_once(stack: Stack) -> None:
    two = _two_tenants(stack)
    with stack.server.client() as a:
        h = _csrf(_login(a, two.admin_a, "admin-password-1"))
        url = a.post("/api/v1/users", json={"email": f"new@{two.tag}.test"}, headers=h).json()["invitation_url"]
    with stack.server.client() as c:  # no password yet: no login
        assert _login(c, f"new@{two.tag}.test", "new-password-12").status_code == 401
    joined = _accept(stack.server, url, "new-password-12")
    me = joined.get("/api/v1/me").json()
    assert me["user"]["email"] == f"new@{two.tag}.test" and me["tenant"]["id"] == two.a_id
    assert stack.server.client().get(urlsplit(url).path).status_code == 404  # once only
    with stack.server.client() as c:
        assert _login(c, f"new@{two.tag}.test", "new-password-12").status_code == 200


def _status_cell(page: str, email: str) -> str:
    row = re.search(
        r"<tr[^>]*id=\"user-\d+\"[^>]*>(?:(?!</tr>).)*?" + re.escape(email) + r"(?:(?!</tr>).)*</tr>", page, re.S
    )
    assert row is not None, email
    cell = re.search(r'data-label="Status">(.*?)</td>', row.group(0), re.S)
    assert cell is not None
    return re.sub(r"<[^>]+>", "", cell.group(1)).strip()


def test_the_users_page_says_invited_until_the_link_is_used(stack: Stack) -> None:
    two = _two_tenants(stack)
    email = f"invited@{two.tag}.test"
    with stack.server.client() as a:
        h = _csrf(_login(a, two.admin_a, "admin-password-1"))
        url = a.post("/api/v1/users", json={"email": email}, headers=h).json()["invitation_url"]
        assert _status_cell(a.get("/system-settings/users").text, email) == "Invited"
        assert _status_cell(a.get("/system-settings/users").text, two.admin_a) == "Active"
        _accept(stack.server, url, "invited-password-1")
        assert _status_cell(a.get("/system-settings/users").text, email) == "Active"


def test_an_existing_person_confirms_with_their_own_password(stack: Stack) -> None:
    two = _two_tenants(stack)
    with stack.server.client() as b:
        h = _csrf(_login(b, two.admin_b, "admin-password-1"))
        url = b.post("/api/v1/users", json={"email": two.dev}, headers=h).json()["invitation_url"]
    c = stack.server.client()
    path = urlsplit(url).path
    page = c.get(path)
    assert "Confirm with the password you already use" in page.text and "password_again" not in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    wrong = c.post(path, data={"csrf_token": csrf.group(1), "password": "not-their-password"})
    assert wrong.status_code == 401 and "kbai_session" not in c.cookies
    joined = _accept(stack.server, url, "dev-password-1")  # still usable after the wrong try
    assert joined.get("/api/v1/me").json()["tenant"]["id"] == two.b_id


# ---- two memberships: tokens of A never act as B -------------------------------------------------------
def test_tokens_of_tenant_a_never_work_as_tenant_b(stack: Stack) -> None:
    two = _two_tenants(stack)
    in_b = _join_b(stack, two)
    with stack.server.client() as in_a:
        ha = _csrf(_login(in_a, two.dev, "dev-password-1", two.a_name))
        token_a = create_token(in_a, ha["X-CSRF-Token"], "a", ["users.read", "roles.read"])
        person = in_a.get("/api/v1/me").json()["user"]["id"]
    hb = _csrf(_login(in_b, two.dev, "dev-password-1", f"org_b_{two.tag}"))  # by the tenant's external id
    token_b = create_token(in_b, hb["X-CSRF-Token"], "b", ["users.read", "roles.read"])
    in_b.close()
    with stack.server.client() as c:
        for token, tenant, other in ((token_a, two.a_id, two.b_id), (token_b, two.b_id, two.a_id)):
            r = c.get("/auth/check", headers=bearer(token.plaintext))
            assert r.status_code == 200
            assert r.headers["x-kbai-tenant"] == str(tenant) and r.headers["x-kbai-user"] == str(person)
            assert r.headers["x-kbai-user-email"] == two.dev
            side = "a" if tenant == two.a_id else "b"
            assert r.headers["x-kbai-tenant-external-id"] == f"org_{side}_{two.tag}"
            me = c.get("/api/v1/me", headers=bearer(token.plaintext)).json()
            assert me == {
                "user": {"id": person, "email": two.dev},
                "tenant": {"id": tenant, "name": f"T{side.upper()}-{two.tag}", "external_id": f"org_{side}_{two.tag}"},
                "scopes": ["users.read", "roles.read"],
                "token_id": token.id,
                "auth": "token",
            }
            users = {u["email"] for u in c.get("/api/v1/users", headers=bearer(token.plaintext)).json()["users"]}
            assert users == {f"admin@{side}-{two.tag}.test", two.dev}  # its own tenant's people only
            seen = _introspect(stack, token.plaintext)
            assert seen["active"] is True and seen["sub"] == str(person) and seen["tenant"] == str(tenant)
            assert seen["tenant_external_id"] == f"org_{side}_{two.tag}"
            roles = c.get("/api/v1/roles", headers=bearer(token.plaintext)).json()["roles"]
            assert len(roles) == 3  # Admin, Member, Devs of its own tenant; none of the other's
            assert other != tenant
        # A token of A cannot reach B's token or B's users by id.
        r = c.post(f"/api/v1/tokens/{token_b.id}/revoke", headers=bearer(token_a.plaintext))
        assert r.status_code == 404
        assert _introspect(stack, token_b.plaintext)["active"] is True


def test_switching_tenants_gives_a_new_session_and_csrf_token(stack: Stack) -> None:
    two = _two_tenants(stack)
    c = _join_b(stack, two)
    first = _login(c, two.dev, "dev-password-1")  # default: the tenant used last (B, just joined)
    assert first.json()["tenant"]["id"] == two.b_id
    assert {t["id"] for t in first.json()["tenants"]} == {two.a_id, two.b_id}
    old_cookie, old_csrf = c.cookies["kbai_session"], first.json()["csrf_token"]
    r = c.post("/api/v1/session/tenant", json={"tenant": two.a_name}, headers={"X-CSRF-Token": old_csrf})
    assert r.status_code == 200 and r.json()["tenant"]["id"] == two.a_id, r.text
    new_cookie, new_csrf = c.cookies["kbai_session"], r.json()["csrf_token"]
    assert new_cookie != old_cookie and new_csrf != old_csrf
    assert c.get("/api/v1/me").json()["tenant"]["id"] == two.a_id
    listed = c.get("/api/v1/session/tenants").json()
    assert listed["current"] == two.a_id and {t["name"] for t in listed["tenants"]} == {two.a_name, two.b_name}
    # The new CSRF token works with the new cookie; the old one does not; the old cookie is gone.
    assert (
        c.post("/api/v1/tokens", json={"name": "x", "scopes": []}, headers={"X-CSRF-Token": old_csrf}).json()["error"][
            "code"
        ]
        == "csrf_failed"
    )
    assert (
        c.post(
            "/api/v1/tokens", json={"name": "x", "scopes": ["users.read"]}, headers={"X-CSRF-Token": new_csrf}
        ).status_code
        == 201
    )
    with stack.server.client(cookies={"kbai_session": old_cookie}) as stale:
        assert stale.get("/api/v1/me").status_code == 401
    # Next login without a tenant lands where the person was last.
    with stack.server.client() as again:
        assert _login(again, two.dev, "dev-password-1").json()["tenant"]["id"] == two.a_id
    # Not a member, and no such tenant: the same 404, nothing changed.
    for target in ("no-such-tenant", str(two.b_id + 1000), f"T-other-{two.tag}"):
        r = c.post("/api/v1/session/tenant", json={"tenant": target}, headers={"X-CSRF-Token": new_csrf})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_a_member"
    assert c.get("/api/v1/me").json()["tenant"]["id"] == two.a_id
    # A token never switches (a session only).
    token = create_token(c, new_csrf, "t", ["users.read"])
    r = c.post("/api/v1/session/tenant", json={"tenant": two.b_id}, headers=bearer(token.plaintext))
    assert r.status_code in (401, 403) and r.json()["error"]["code"] == "session_required"
    c.close()


def test_login_to_a_tenant_one_is_not_in_answers_as_a_wrong_password(stack: Stack) -> None:
    two = _two_tenants(stack)
    with stack.server.client() as c:
        wrong_password = _login(c, two.dev, "not-the-password-1", two.a_name)
        not_member = _login(c, two.dev, "dev-password-1", two.b_name)
        no_tenant = _login(c, two.dev, "dev-password-1", "no-such-tenant")
        assert wrong_password.status_code == not_member.status_code == no_tenant.status_code == 401
        assert wrong_password.json() == not_member.json() == no_tenant.json()
        assert "kbai_session" not in c.cookies
        for ref in (two.a_id, str(two.a_id), two.a_name, f"org_a_{two.tag}"):
            assert _login(c, two.dev, "dev-password-1", ref).json()["tenant"]["id"] == two.a_id


def test_deactivation_in_one_tenant_leaves_the_other_membership_and_its_tokens(stack: Stack) -> None:
    two = _two_tenants(stack)
    in_b = _join_b(stack, two)
    hb = _csrf(_login(in_b, two.dev, "dev-password-1", two.b_id))
    token_b = create_token(in_b, hb["X-CSRF-Token"], "b", ["users.read"])
    with stack.server.client() as in_a:
        ha = _csrf(_login(in_a, two.dev, "dev-password-1", two.a_id))
        token_a = create_token(in_a, ha["X-CSRF-Token"], "a", ["users.read"])
        with stack.server.client() as admin:
            h = _csrf(_login(admin, two.admin_a, "admin-password-1"))
            member = next(u["id"] for u in admin.get("/api/v1/users").json()["users"] if u["email"] == two.dev)
            assert admin.post(f"/api/v1/users/{member}/deactivate", headers=h).json()["active"] is False
        assert in_a.get("/api/v1/me").status_code == 401  # A's session ended
    with stack.server.client() as c:
        assert c.get("/auth/check", headers=bearer(token_a.plaintext)).status_code == 401
        r = c.get("/auth/check", headers=bearer(token_b.plaintext))
        assert r.status_code == 200 and r.headers["x-kbai-tenant"] == str(two.b_id)
        assert _login(c, two.dev, "dev-password-1", two.a_id).status_code == 401
        assert _login(c, two.dev, "dev-password-1").json()["tenant"]["id"] == two.b_id
        assert [t["id"] for t in _login(c, two.dev, "dev-password-1").json()["tenants"]] == [two.b_id]
    assert in_b.get("/api/v1/me").json()["tenant"]["id"] == two.b_id  # B's session untouched
    in_b.close()


def test_the_active_token_limit_counts_per_membership(stack: Stack) -> None:
    two = _two_tenants(stack)
    in_b = _join_b(stack, two)
    svc = Services.build(Settings(database_url=stack.database_url, **FAST_ARGON2))
    try:
        svc.access.set_limit(OPERATOR, 1, user_email=two.dev, membership_tenant=two.a_name)
    finally:
        svc.close()
    with stack.server.client() as in_a:
        ha = _csrf(_login(in_a, two.dev, "dev-password-1", two.a_id))
        create_token(in_a, ha["X-CSRF-Token"], "one", ["users.read"])
        r = in_a.post("/api/v1/tokens", json={"name": "two", "scopes": ["users.read"]}, headers=ha)
        assert r.status_code == 409 and "1" in r.json()["error"]["message"]
    hb = _csrf(_login(in_b, two.dev, "dev-password-1", two.b_id))
    for n in range(3):  # B's membership has the default limit, whatever A's holds
        create_token(in_b, hb["X-CSRF-Token"], f"b{n}", ["users.read"])
    in_b.close()


def test_set_password_ends_the_persons_sessions_in_every_tenant(stack: Stack) -> None:
    import subprocess

    from tests.conftest import KBAI_BIN, server_env

    two = _two_tenants(stack)
    in_b = _join_b(stack, two)
    with stack.server.client() as in_a:
        _csrf(_login(in_a, two.dev, "dev-password-1", two.a_id))
        done = subprocess.run(
            [KBAI_BIN, "user", "set-password", "--email", two.dev, "--password-stdin"],
            input="brand-new-password-1\n",
            env=server_env(stack.database_url),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert in_a.get("/api/v1/me").status_code == 401
    assert in_b.get("/api/v1/me").status_code == 401
    in_b.close()
    with stack.server.client() as c:
        assert _login(c, two.dev, "brand-new-password-1", two.b_id).status_code == 200


def test_the_sdk_says_the_person_and_the_one_tenant_of_a_token(stack: Stack) -> None:
    """Both verifiers of kbai.sdk agree with /auth/check: the person's id, the token's tenant, its external id."""

    from kbai.sdk import IntrospectionVerifier, LocalVerifier

    two = _two_tenants(stack)
    in_b = _join_b(stack, two)
    hb = _csrf(_login(in_b, two.dev, "dev-password-1", two.b_id))
    token_b = create_token(in_b, hb["X-CSRF-Token"], "b", ["users.read"])
    person = in_b.get("/api/v1/me").json()["user"]["id"]
    in_b.close()
    local = LocalVerifier(stack.database_url)
    remote = IntrospectionVerifier(stack.server.url + "/api/v1/introspect", stack.client_id, stack.client_secret)
    try:
        for verifier in (local, remote):
            identity = run_coroutine(verifier.verify(token_b.plaintext))
            assert (identity.user_id, identity.tenant_id, identity.email) == (person, two.b_id, two.dev)  # type: ignore[union-attr]
            assert identity.tenant_external_id == f"org_b_{two.tag}"  # type: ignore[union-attr]
    finally:
        local.services.close()


def test_the_cli_adds_an_existing_person_to_another_tenant_without_touching_their_password(stack: Stack) -> None:
    import subprocess

    from tests.conftest import KBAI_BIN, server_env

    two = _two_tenants(stack)
    env = server_env(stack.database_url)
    done = subprocess.run(
        [KBAI_BIN, "user", "create", "--tenant", two.b_name, "--email", two.dev, "--role", "Devs"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "already had an account" in done.stdout and "password for" not in done.stdout
    refused = subprocess.run(
        [KBAI_BIN, "user", "create", "--tenant", two.a_name, "--email", f"x@{two.tag}.test", "--password-stdin"],
        input="short\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1
    ambiguous = subprocess.run(
        [KBAI_BIN, "user", "deactivate", "--email", two.dev], env=env, capture_output=True, text=True, timeout=60
    )
    assert ambiguous.returncode != 0 and "--tenant" in ambiguous.stderr and "Traceback" not in ambiguous.stderr
    with stack.server.client() as c:
        for tenant in (two.a_id, two.b_id):
            assert _login(c, two.dev, "dev-password-1", tenant).status_code == 200
