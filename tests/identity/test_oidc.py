"""OpenID Connect sign-in against a real provider (oidc-provider on Node), kbai in-process.

Who a person is (issuer, sub), which tenant (the tenant claim against external ids), which roles (the
roles claim, exactly, at every sign-in, with the scopes of their tokens following at once), and every
way a sign-in can fail: each ends on its error page, with no session and nothing created.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from kbai.store.models import AuditEvent, Identity, LoginSession, Tenant, User
from tests.conftest import OPERATOR
from tests.identity.conftest import Rig, make_rig
from tests.identity.provider import OidcProvider, login_at_provider
from tests.web.safety import changed_tables, page_problems, shown_page, snapshot

ACME = "org-acme"
# The protocol's failures are the provider's and kbai's, not the database's: tried on SQLite only (the
# people, tenant and role rules above them run on both backends).
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])


def _account(rig: Rig, login: str = "alice", **claims: Any) -> None:
    values = {
        "email": f"{login}@acme.test",
        "email_verified": True,
        "org_id": ACME,
        "org_name": "Acme",
        "roles": ["Developers"],
        **claims,
    }
    rig.provider.set_account(login, "pw", **{k: v for k, v in values.items() if v is not None})


def _me(client: httpx.Client, **headers: str) -> dict[str, Any]:
    r = client.get("/api/v1/me", headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _signed_in(r: httpx.Response, to: str = "/system-settings") -> None:
    assert r.status_code == 303, shown_page(r)
    assert r.headers["location"] == to
    assert "kbai_session=" in r.headers.get("set-cookie", "")


def _refused(rig: Rig, client: httpx.Client, path: str, status: int, code: str, says: str = "") -> None:
    """The callback ``path`` ends on an error page with a way back, opens no session, changes nothing."""
    before = snapshot(rig.svc.db)
    r = client.get(path)
    problems = page_problems(r, status, code, says)
    assert not problems, f"{problems}: {shown_page(r)}"
    assert 'href="/login"' in r.text and "Back to log in" in r.text
    assert "kbai_session=" not in r.headers.get("set-cookie", "")
    assert changed_tables(before, snapshot(rig.svc.db)) == []
    assert client.get("/api/v1/me").status_code == 401


# ---- who they are --------------------------------------------------------------------------------
def test_first_sign_in_creates_the_user_in_the_tenant_of_the_claim_with_the_claimed_roles(rig: Rig) -> None:
    _account(rig, roles=["developers", "NoSuchRole"])
    with rig.client() as client:
        r = rig.sign_in(client, "alice", next_path="/system-settings/api-keys")
        _signed_in(r, "/system-settings/api-keys")
        me = _me(client)
        assert me["user"]["email"] == "alice@acme.test" and me["auth"] == "session"
        assert me["tenant"] == {"id": rig.tenant_id, "name": "Acme", "external_id": ACME}
        assert set(me["scopes"]) == {"developer.manage_tokens", "users.read", "roles.read"}
        assert client.get("/system-settings/api-keys").status_code == 200
        csrf = client.get("/system-settings/api-keys").text.split('name="csrf_token" value="')[1].split('"')[0]
        created = client.post(
            "/api/v1/tokens", json={"name": "after sso", "scopes": ["users.read"]}, headers={"X-CSRF-Token": csrf}
        )
        assert created.status_code == 201, created.text
    with rig.svc.db.read() as s:
        user = s.scalar(select(User).where(User.email == "alice@acme.test"))
        assert user is not None and user.tenant_id == rig.tenant_id and user.external_id == "sub-alice"
        identity = s.scalar(select(Identity).where(Identity.person_id == user.person_id))
        assert identity is not None and (identity.issuer, identity.subject) == (rig.provider.issuer, "sub-alice")
        events = {e.action: e for e in s.scalars(select(AuditEvent).where(AuditEvent.target_id == str(user.id)))}
    assert events["user.create"].actor == f"provider:{rig.provider.issuer}"
    assert events["user.create"].details["roles"] == ["Developers"] and events["user.create"].details["via"] == "oidc"
    assert events["session.login"].details == {"via": "oidc", "issuer": rig.provider.issuer}
    assert "NoSuchRole" not in str(events)


@SQLITE_ONLY
def test_the_same_person_is_found_by_issuer_and_sub_even_when_the_email_changes(rig: Rig) -> None:
    _account(rig)
    with rig.client() as client:
        _signed_in(rig.sign_in(client, "alice"))
        first = _me(client)["user"]["id"]
    _account(rig, email="alice.new@acme.test")
    with rig.client() as client:
        _signed_in(rig.sign_in(client, "alice"))
        assert _me(client)["user"] == {"id": first, "email": "alice@acme.test"}
    with rig.svc.db.read() as s:
        assert s.scalar(select(func.count()).select_from(User).where(User.tenant_id == rig.tenant_id)) == 2


def test_a_first_sign_in_links_an_existing_user_by_verified_email_or_by_external_id(rig: Rig) -> None:
    dev, _ = rig.svc.access.create_user(OPERATOR, rig.tenant_id, "bob@acme.test", "bob-password-1", ["Member"])
    carol, _ = rig.svc.access.create_user(
        OPERATOR, rig.tenant_id, "carol.old@acme.test", "carol-password-1", ["Member"], external_id="sub-carol"
    )
    _account(rig, "bob", roles=None)
    _account(rig, "carol", email="carol@acme.test", email_verified=False, roles=None)
    for login, person_id in (("bob", dev.person_id), ("carol", carol.person_id)):
        with rig.client() as client:
            _signed_in(rig.sign_in(client, login))
            assert _me(client)["user"]["id"] == person_id
    with rig.svc.db.read() as s:
        links = {
            e.details["email"]: e.details["by"]
            for e in s.scalars(select(AuditEvent).where(AuditEvent.action == "identity.link"))
        }
    assert links == {"bob@acme.test": "email", "carol.old@acme.test": "external_id"}
    assert rig.svc.access.person_by_email("bob@acme.test").password_hash.startswith("$argon2")  # type: ignore[union-attr]


def test_an_unverified_email_never_links_and_never_makes_a_second_account(rig: Rig) -> None:
    rig.svc.access.create_user(OPERATOR, rig.tenant_id, "bob@acme.test", "bob-password-1", ["Member"])
    _account(rig, "mallory", email="bob@acme.test", email_verified=False)
    with rig.client() as client:
        _refused(rig, client, rig.callback_for(client, "mallory"), 409, "oidc_email_unverified", "bob@acme.test")


def test_a_verified_email_of_a_member_of_another_tenant_is_the_same_person_here(rig: Rig) -> None:
    """People in several tenants: the sign-in lands in the tenant of its claim, as a new membership of the
    person who has that (verified) email; their other membership and password stay as they were."""
    _globex, boss, _ = rig.svc.access.create_tenant(
        OPERATOR, "Globex", "boss@globex.test", "boss-password-1", external_id="org-globex"
    )
    assert boss is not None
    _account(rig, "boss", email="boss@globex.test")
    with rig.client() as client:
        _signed_in(rig.sign_in(client, "boss"))
        me = _me(client)
    assert me["user"] == {"id": boss.person_id, "email": "boss@globex.test"} and me["tenant"]["id"] == rig.tenant_id
    assert {m.tenant_name for m in rig.svc.access.memberships(boss.person_id)} == {"Acme", "Globex"}
    assert rig.svc.access.authenticate("boss@globex.test", "boss-password-1", "Globex").id == boss.id
    # Unverified, the same email is refused (it is someone's): never a second person, never a link.
    _account(rig, "boss2", email="boss@globex.test", email_verified=False)
    with rig.client() as client:
        _refused(rig, client, rig.callback_for(client, "boss2"), 409, "oidc_email_unverified", "boss@globex.test")


# ---- roles ---------------------------------------------------------------------------------------
def test_a_role_removed_from_the_claim_removes_its_scopes_from_the_persons_tokens_at_the_next_sign_in(rig: Rig) -> None:
    _account(rig, roles=["Developers"])
    with rig.client() as client:
        _signed_in(rig.sign_in(client, "alice"))
        csrf = client.get("/system-settings").text.split('name="csrf_token" value="')[1].split('"')[0]
        r = client.post(
            "/api/v1/tokens",
            json={"name": "zapier", "scopes": ["users.read", "roles.read"]},
            headers={"X-CSRF-Token": csrf},
        )
        assert r.status_code == 201
        token = r.json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    with rig.client() as anon:
        assert anon.get("/auth/check", params={"scope": "roles.read"}, headers=bearer).status_code == 200
        _account(rig, roles=["Readers"])  # the product takes Developers away, gives Readers (users.read)
        with rig.client() as client:
            _signed_in(rig.sign_in(client, "alice"))
        assert anon.get("/auth/check", params={"scope": "roles.read"}, headers=bearer).status_code == 403
        assert anon.get("/auth/check", params={"scope": "users.read"}, headers=bearer).status_code == 200
        assert _me(anon, **bearer)["scopes"] == ["users.read"]
    with rig.svc.db.read() as s:
        change = s.scalars(select(AuditEvent).where(AuditEvent.action == "user.roles")).all()[-1]
    assert change.actor == f"provider:{rig.provider.issuer}" and change.details["roles"] == ["Readers"]


def test_the_claim_may_grant_admin_and_the_last_admin_keeps_it(rig: Rig) -> None:
    _account(rig, roles=["ADMIN"])
    with rig.client() as client:
        _signed_in(rig.sign_in(client, "alice"))
        assert "users.manage" in _me(client)["scopes"]
    rig.svc.access.deactivate_user(OPERATOR, rig.svc.access.user_by_email("admin@acme.test").id)  # type: ignore[union-attr]
    _account(rig, roles=["Member"])  # would leave Acme without an active admin
    with rig.client() as client:
        _signed_in(rig.sign_in(client, "alice"))
        assert "users.manage" in _me(client)["scopes"]
    view = rig.svc.access.get_user(OPERATOR, rig.svc.access.user_by_email("alice@acme.test").id)  # type: ignore[union-attr]
    assert view.roles == ["Admin", "Member"]


@SQLITE_ONLY
def test_without_a_roles_claim_roles_stay_as_they_are(rig: Rig) -> None:
    _account(rig, roles=None)
    with rig.client() as client:
        _signed_in(rig.sign_in(client, "alice"))
        assert _me(client)["scopes"] == []  # Member
    user = rig.svc.access.user_by_email("alice@acme.test")
    assert user is not None
    rig.svc.access.set_user_roles(OPERATOR, user.id, ["Developers"])
    with rig.client() as client:
        _signed_in(rig.sign_in(client, "alice"))
        assert "developer.manage_tokens" in _me(client)["scopes"]


@SQLITE_ONLY
def test_unknown_role_names_are_ignored_and_logged_once(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    _account(rig, roles=["Developers", "Wizards"])
    with caplog.at_level(logging.WARNING, logger="kbai.identity"):
        for _ in range(2):
            with rig.client() as client:
                _signed_in(rig.sign_in(client, "alice"))
    assert [r.getMessage() for r in caplog.records if "Wizards" in r.getMessage()] == [
        f"OIDC roles claim names role 'Wizards', which tenant {rig.tenant_id} does not have; ignored"
    ]


# ---- tenants -------------------------------------------------------------------------------------
def test_an_unknown_tenant_is_refused(rig: Rig) -> None:
    _account(rig, org_id="org-nowhere")
    with rig.client() as client:
        _refused(rig, client, rig.callback_for(client, "alice"), 403, "oidc_tenant_unknown", "org-nowhere")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_with_create_tenants_an_unknown_tenant_is_made_and_its_first_person_administers_it(
    database_url: str, oidc_provider: OidcProvider
) -> None:
    rig = make_rig(database_url, oidc_provider, oidc_create_tenants=True)
    _account(rig, "zed", email="zed@initech.test", org_id="org-initech", org_name="Initech", roles=["Member"])
    with rig.client() as client:
        _signed_in(rig.sign_in(client, "zed"))
        me = _me(client)
    assert me["tenant"]["name"] == "Initech" and me["tenant"]["external_id"] == "org-initech"
    assert "users.manage" in me["scopes"]  # the tenant's only member is its admin
    with rig.svc.db.read() as s:
        tenant = s.scalar(select(Tenant).where(Tenant.external_id == "org-initech"))
        created = s.scalar(
            select(AuditEvent).where(AuditEvent.action == "tenant.create", AuditEvent.tenant_id == tenant.id)
        )  # type: ignore[union-attr]
    assert created is not None and created.actor == f"provider:{oidc_provider.issuer}"
    rig.svc.close()


def test_without_the_tenant_claim_nobody_gets_in(rig: Rig) -> None:
    _account(rig, org_id=None)
    with rig.client() as client:
        _refused(rig, client, rig.callback_for(client, "alice"), 403, "oidc_claim_missing", "'org_id' claim")


def test_a_deactivated_user_gets_no_session(rig: Rig) -> None:
    _account(rig)
    with rig.client() as client:
        _signed_in(rig.sign_in(client, "alice"))
    user = rig.svc.access.user_by_email("alice@acme.test")
    rig.svc.access.deactivate_user(OPERATOR, user.id)  # type: ignore[union-attr]
    with rig.client() as client:
        _refused(rig, client, rig.callback_for(client, "alice"), 403, "user_inactive")


# ---- the protocol's failures -----------------------------------------------------------------------
@SQLITE_ONLY
def test_a_state_that_does_not_match_is_refused(rig: Rig) -> None:
    _account(rig)
    with rig.client() as client:
        path = rig.callback_for(client, "alice")
        forged = path.replace("state=", "state=x", 1)
        _refused(rig, client, forged, 400, "oidc_state_mismatch", "did not start in this browser")


@SQLITE_ONLY
def test_a_callback_in_another_browser_is_refused(rig: Rig) -> None:
    """Login CSRF: a code and state from the attacker's own flow, finished in the victim's browser."""
    _account(rig)
    with rig.client() as attacker, rig.client() as victim:
        _refused(rig, victim, rig.callback_for(attacker, "alice"), 400, "oidc_state_mismatch")


@SQLITE_ONLY
def test_a_replayed_code_is_refused(rig: Rig) -> None:
    _account(rig)
    with rig.client() as client:
        used = rig.callback_for(client, "alice")
        _signed_in(client.get(used))
        before = snapshot(rig.svc.db)
        again = client.get(used)  # the same callback once more: its flow was finished and forgotten
        assert page_problems(again, 400, "oidc_state_mismatch") == [], shown_page(again)
        assert changed_tables(before, snapshot(rig.svc.db)) == []
    with rig.client() as other:
        code = dict(p.split("=", 1) for p in used.split("?", 1)[1].split("&"))["code"]
        fresh = login_at_provider(rig.start(other), "alice", "pw").params  # a new flow of its own
        _refused(
            rig,
            other,
            f"/oidc/callback?code={code}&state={fresh['state']}&iss={fresh['iss']}",
            401,
            "oidc_code_rejected",
            "already used",
        )


@SQLITE_ONLY
def test_an_id_token_for_another_application_is_refused(rig: Rig) -> None:
    _account(rig)
    rig.provider.add_client("http://other.test/cb", client_id="other-app", secret="other-app-secret-0123456789")
    rig.provider.knobs(id_token_client="other-app")
    with rig.client() as client:
        _refused(rig, client, rig.callback_for(client, "alice"), 401, "oidc_id_token_invalid", "another application")


@SQLITE_ONLY
def test_an_expired_id_token_is_refused(rig: Rig) -> None:
    _account(rig)
    rig.provider.knobs(id_token_ttl=60)
    with rig.client() as client:
        path = rig.callback_for(client, "alice")
        rig.clock.advance(minutes=5)  # within the flow's 10 minutes, past the token's 60 s and the leeway
        _refused(rig, client, path, 401, "oidc_id_token_invalid", "expired")


@SQLITE_ONLY
def test_keys_rotate_and_a_key_the_provider_does_not_publish_is_refused(
    rig: Rig, provider_keys: list[dict[str, object]]
) -> None:
    _account(rig)
    with rig.client() as client:
        _signed_in(rig.sign_in(client, "alice"))  # kbai now knows key-1 and key-2
    rig.provider.restart(keys=[provider_keys[2], provider_keys[0]])  # rotation: key-3 signs from now on
    before = rig.provider.stats()["jwks"]
    with rig.client() as client:
        _signed_in(rig.sign_in(client, "alice"))
    assert rig.provider.stats()["jwks"] - before == 1  # an unknown kid: the JWKS fetched again, once
    rig.provider.restart(keys=[provider_keys[1], provider_keys[0]])
    rig.provider.knobs(hidden_kids=["key-2"])  # key-2 signs but is not published
    rig.svc.oidc.client.jwks(refresh=True)  # type: ignore[union-attr]
    before = rig.provider.stats()["jwks"]
    with rig.client() as client:
        _refused(rig, client, rig.callback_for(client, "alice"), 401, "oidc_unknown_key", "does not publish")
    assert rig.provider.stats()["jwks"] - before == 1  # looked once more, then refused


@SQLITE_ONLY
def test_a_provider_that_is_down_gets_an_error_page(rig: Rig) -> None:
    _account(rig)
    with rig.client() as client:
        path = rig.callback_for(client, "alice")
        rig.provider.stop()
        _refused(rig, client, path, 502, "oidc_provider_unreachable", "cannot be reached")
    rig.svc.oidc.client._metadata = None  # type: ignore[union-attr]  # forget discovery, as a new process would
    with rig.client() as client:
        before = snapshot(rig.svc.db)
        r = client.get("/oidc/login")
        assert page_problems(r, 502, "oidc_provider_unreachable") == [], shown_page(r)
        assert changed_tables(before, snapshot(rig.svc.db)) == []


@SQLITE_ONLY
def test_a_sign_in_cancelled_at_the_provider_is_refused(rig: Rig) -> None:
    _account(rig)
    with rig.client() as client, httpx.Client(timeout=10, follow_redirects=False) as browser:
        r = browser.get(rig.start(client))
        uid = r.headers["location"].rsplit("/", 1)[1]
        r = browser.get(f"{rig.provider.issuer}/interaction/{uid}/abort")
        while r.status_code in (302, 303) and r.headers["location"].startswith(rig.provider.issuer):
            r = browser.get(r.headers["location"])
        back = r.headers["location"].replace("http://testserver", "")
        _refused(rig, client, back, 401, "oidc_provider_refused", "access_denied")


@SQLITE_ONLY
def test_sessions_opened_by_sign_in_are_real_sessions(rig: Rig) -> None:
    _account(rig)
    with rig.client() as client:
        _signed_in(rig.sign_in(client, "alice"))
        with rig.svc.db.read() as s:
            assert s.scalar(select(func.count()).select_from(LoginSession)) == 1
        page = client.get("/system-settings").text
        csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
        assert client.post("/logout", data={"csrf_token": csrf}).status_code == 303
        assert client.get("/api/v1/me").status_code == 401


def test_two_first_sign_ins_at_once_make_one_user_and_two_sessions(rig: Rig) -> None:
    """A person double-clicks (or has two tabs): both callbacks land, neither is a 500, one user is made."""
    from concurrent.futures import ThreadPoolExecutor

    _account(rig)
    clients = [rig.client() for _ in range(4)]
    try:
        paths = [rig.callback_for(c, "alice") for c in clients]
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(lambda cp: cp[0].get(cp[1]), zip(clients, paths, strict=True)))
        assert [r.status_code for r in answers] == [303] * 4, [shown_page(r) for r in answers]
        assert len({_me(c)["user"]["id"] for c in clients}) == 1
    finally:
        for c in clients:
            c.close()
    with rig.svc.db.read() as s:
        assert s.scalar(select(func.count()).select_from(User).where(User.email == "alice@acme.test")) == 1
        assert s.scalar(select(func.count()).select_from(Identity)) == 1
