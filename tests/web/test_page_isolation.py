"""The HTML pages are sealed off like the JSON API (tests/web/test_isolation.py): every page that takes an
id in its address is tried against Acme's objects by the admin of another tenant (Globex, every
permission there) and by a fellow Acme developer (Mallory), with their own sessions and the forms' real
CSRF fields. Each attempt gets an error page (404, or 403 where the caller lacks the permission
altogether), reveals nothing of the victim, and changes nothing; the list pages show the attacker
only their own. Runs in-process on both backends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import pytest
from fastapi.testclient import TestClient

from kbai.access.catalog import MANAGE_TOKENS
from kbai.access.requests import AdminRequests
from kbai.app import create_app
from kbai.clock import FrozenClock
from kbai.config import Settings
from kbai.services import Services
from kbai.web import pages
from tests.conftest import FAST_ARGON2, OPERATOR, build_world
from tests.web.safety import changed_tables, page_problems, shown_page, snapshot

ATTACKERS = ("globex-admin", "mallory")
SECRET_ROLE = "Acme-Secret-Role-P4"
NOTE = "victim-asks-for-tokens-9x"


@dataclass(repr=False)
class Env:
    svc: Services
    client: dict[str, httpx.Client]
    csrf: dict[str, str]
    ids: dict[str, int]
    victim: list[str]  # what no other user may see: the victim's token names and prefixes, their notification
    acme: list[str]  # what another tenant may not see either

    def __repr__(self) -> str:
        return f"Env(ids={self.ids})"

    def secrets(self, attacker: str) -> list[str]:
        return self.victim + (self.acme if attacker == "globex-admin" else [])


@pytest.fixture(scope="module")
def env(module_database_url: str) -> Iterator[Env]:
    svc = Services.build(Settings(database_url=module_database_url, **FAST_ARGON2), clock=FrozenClock())
    acme = build_world(svc)
    build_world(svc, tenant="Globex", domain="globex.test")
    secret_role = svc.access.create_role(OPERATOR, acme.tenant_id, SECRET_ROLE, ["audit.read"])
    svc.access.create_user(OPERATOR, acme.tenant_id, "mallory@acme.test", "mallory-password-1", [acme.dev_role_id])
    asker, _ = svc.access.create_user(OPERATOR, acme.tenant_id, "asker@acme.test", "asker-password-1", ["Member"])
    gone, _ = svc.access.create_user(OPERATOR, acme.tenant_id, "gone@acme.test", "gone-password-1", ["Member"])
    svc.access.deactivate_user(OPERATOR, gone.id)
    AdminRequests(svc.access).ask(acme.actor("asker@acme.test"), MANAGE_TOKENS, NOTE)
    (request,) = AdminRequests(svc.access).pending(acme.admin)
    tokens = [svc.tokens.create(acme.dev, name, ["users.read"])[0] for name in ("victim-zapier-q1", "victim-cron-q2")]
    victim = [t.name for t in tokens] + [t.prefix for t in tokens]
    # The tenant's service token: only who holds developer.manage_service_tokens in Acme sees it (not Mallory).
    service, _ = svc.tokens.create_service(acme.admin, "acme-service-token-s7", ["users.read"])
    victim += [service.name, service.prefix]
    notification = _victim_notification(svc, acme.tenant_id, acme.dev.user_id)  # type: ignore[arg-type]
    if notification:
        victim.append("victim-notification-title")
    acme_hidden = ["acme.test", "Acme", SECRET_ROLE, NOTE]
    try:
        svc.policies.set(OPERATOR, acme.tenant_id, webhook_url="https://hooks.acme-secret-p4.example/kbai")
        acme_hidden.append("acme-secret-p4")
    except (AttributeError, TypeError):  # the policy feature is built alongside
        pass

    invited = svc.access.invite(acme.admin, acme.tenant_id, "invitee@acme.test")  # a link only the invitee holds
    scim, _ = svc.provisioning.create(OPERATOR, acme.tenant_id, "Okta of Acme")
    app = create_app(svc, start_background=False)
    clients = {a: TestClient(app, raise_server_exceptions=False, follow_redirects=False) for a in ATTACKERS}
    csrf = {}
    for attacker, email, password in (
        ("globex-admin", "admin@globex.test", "admin-password-1"),
        ("mallory", "mallory@acme.test", "mallory-password-1"),
    ):
        r = clients[attacker].post("/api/v1/session", json={"email": email, "password": password})
        assert r.status_code == 200
        csrf[attacker] = r.json()["csrf_token"]
    ids = {
        "victim_token": tokens[0].id,
        "service_token": service.id,
        "victim_user": acme.dev.user_id,
        "asker": asker.id,
        "gone": gone.id,
        "secret_role": secret_role.id,
        "dev_role": acme.dev_role_id,
        "request": request.id,
        "notification": notification,
        "invitation": invited.path,
        "scim_credential": scim.id,
        "member_role": {r.name: r.id for r in svc.access.list_roles(OPERATOR, acme.tenant_id)}["Member"],
    }
    yield Env(svc, clients, csrf, ids, victim, acme_hidden)  # type: ignore[arg-type]
    for c in clients.values():
        c.close()
    svc.close()


def _victim_notification(svc: Services, tenant_id: int, user_id: int) -> int:
    try:
        from kbai.delivery.notifications import NewNotification

        with svc.db.write() as s:
            (view,) = svc.notifications.add(
                s,
                [
                    NewNotification(
                        user_id=user_id,
                        tenant_id=tenant_id,
                        email="dev@acme.test",
                        kind="token.revoked",
                        title="victim-notification-title",
                        body="victim-notification-body",
                    )
                ],
                svc.clock.now(),
            )
        return int(view.id)
    except (ImportError, AttributeError, TypeError):
        return 0


@dataclass(frozen=True)
class Probe:
    id: str
    method: str
    template: str  # the route, as its module in src/kbai/web/pages/ declares it
    path: Callable[[Env], str]
    expect: dict[str, tuple[int, str]]  # attacker -> (status, error code)
    form: Callable[[Env], dict[str, str]] | None = None  # fields besides csrf_token (POST only)


def _both(status: int, code: str) -> dict[str, tuple[int, str]]:
    return {a: (status, code) for a in ATTACKERS}


NOT_FOUND, FORBIDDEN = (404, "not_found"), (403, "forbidden")
CROSS_404_SAME_403 = {"globex-admin": NOT_FOUND, "mallory": FORBIDDEN}
H = pages.HOME

PROBES = [
    Probe(
        "role-page",
        "GET",
        H + "/roles/{role_id}",
        lambda e: f"{H}/roles/{e.ids['secret_role']}",
        {"globex-admin": NOT_FOUND},
    ),  # Mallory holds roles.read: her own tenant's roles are hers to see
    Probe(
        "role-save",
        "POST",
        H + "/roles/{role_id}",
        lambda e: f"{H}/roles/{e.ids['secret_role']}",
        CROSS_404_SAME_403,
        lambda e: {"permissions": "users.manage"},
    ),
    Probe(
        "user-roles",
        "POST",
        H + "/users/{user_id}/roles",
        lambda e: f"{H}/users/{e.ids['asker']}/roles",
        CROSS_404_SAME_403,
        lambda e: {"roles": str(e.ids["dev_role"])},
    ),
    Probe(
        "user-deactivate",
        "POST",
        H + "/users/{user_id}/deactivate",
        lambda e: f"{H}/users/{e.ids['victim_user']}/deactivate",
        CROSS_404_SAME_403,
    ),
    Probe(
        "user-deactivate-step",
        "GET",
        H + "/users/{user_id}/deactivate",
        lambda e: f"{H}/users/{e.ids['victim_user']}/deactivate",
        CROSS_404_SAME_403,
    ),
    Probe(
        "user-deactivate-keep",
        "POST",
        H + "/users/{user_id}/deactivate",
        lambda e: f"{H}/users/{e.ids['victim_user']}/deactivate",
        CROSS_404_SAME_403,
        lambda e: {"hand_over": str(e.ids["victim_token"])},
    ),
    Probe(
        "user-reactivate",
        "POST",
        H + "/users/{user_id}/reactivate",
        lambda e: f"{H}/users/{e.ids['gone']}/reactivate",
        CROSS_404_SAME_403,
    ),
    Probe(
        "request-grant",
        "POST",
        H + "/requests/{request_id}/grant",
        lambda e: f"{H}/requests/{e.ids['request']}/grant",
        CROSS_404_SAME_403,
        lambda e: {"role_id": str(e.ids["member_role"])},
    ),  # the asker's role
    Probe(
        "request-dismiss",
        "POST",
        H + "/requests/{request_id}/dismiss",
        lambda e: f"{H}/requests/{e.ids['request']}/dismiss",
        CROSS_404_SAME_403,
    ),
    Probe(
        "token-revoke",
        "POST",
        H + "/api-keys/{token_id}/revoke",
        lambda e: f"{H}/api-keys/{e.ids['victim_token']}/revoke",
        _both(*NOT_FOUND),
    ),
    Probe(
        "token-rotate",
        "POST",
        H + "/api-keys/{token_id}/rotate",
        lambda e: f"{H}/api-keys/{e.ids['victim_token']}/rotate",
        _both(*NOT_FOUND),
        lambda e: {"grace": "0"},
    ),
    Probe(
        "token-activity",
        "GET",
        H + "/api-keys/{token_id}/activity",
        lambda e: f"{H}/api-keys/{e.ids['victim_token']}/activity",
        _both(*NOT_FOUND),
    ),
    Probe(
        "token-pause",
        "POST",
        H + "/api-keys/{token_id}/pause",
        lambda e: f"{H}/api-keys/{e.ids['victim_token']}/pause",
        _both(*NOT_FOUND),
    ),
    Probe(
        "token-resume",
        "POST",
        H + "/api-keys/{token_id}/resume",
        lambda e: f"{H}/api-keys/{e.ids['victim_token']}/resume",
        _both(*NOT_FOUND),
    ),
    Probe(
        "service-token-revoke",
        "POST",
        H + "/api-keys/service-tokens/{token_id}/revoke",
        lambda e: f"{H}/api-keys/service-tokens/{e.ids['service_token']}/revoke",
        CROSS_404_SAME_403,
    ),
    Probe(
        "service-token-rotate",
        "POST",
        H + "/api-keys/service-tokens/{token_id}/rotate",
        lambda e: f"{H}/api-keys/service-tokens/{e.ids['service_token']}/rotate",
        CROSS_404_SAME_403,
        lambda e: {"grace": "0"},
    ),
    Probe(
        "service-token-pause",
        "POST",
        H + "/api-keys/service-tokens/{token_id}/pause",
        lambda e: f"{H}/api-keys/service-tokens/{e.ids['service_token']}/pause",
        CROSS_404_SAME_403,
    ),
    Probe(
        "service-token-resume",
        "POST",
        H + "/api-keys/service-tokens/{token_id}/resume",
        lambda e: f"{H}/api-keys/service-tokens/{e.ids['service_token']}/resume",
        CROSS_404_SAME_403,
    ),
    Probe(
        "service-token-activity",
        "GET",
        H + "/api-keys/{token_id}/activity",
        lambda e: f"{H}/api-keys/{e.ids['service_token']}/activity",
        _both(*NOT_FOUND),
    ),
    Probe(
        "inventory-revoke",
        "POST",
        H + "/tokens/{token_id}/revoke",
        lambda e: f"{H}/tokens/{e.ids['victim_token']}/revoke",
        CROSS_404_SAME_403,
    ),
    Probe(
        "notification-read",
        "POST",
        H + "/notifications/{notification_id}/read",
        lambda e: f"{H}/notifications/{e.ids['notification']}/read",
        _both(*NOT_FOUND),
    ),
    # An invitation is reached by its secret alone: a guess one character off is the same 404 as any other.
    Probe(
        "invitation-page",
        "GET",
        "/invitations/{secret}",
        lambda e: _guess(e.ids["invitation"]),
        _both(404, "invitation_invalid"),
    ),
    Probe(
        "invitation-accept",
        "POST",
        "/invitations/{secret}",
        lambda e: _guess(e.ids["invitation"]),
        _both(404, "invitation_invalid"),
        lambda e: {"password": "attacker-password-1", "password_again": "attacker-password-1"},
    ),
    Probe(
        "provisioning-revoke",
        "POST",
        H + "/provisioning/{credential_id}/revoke",
        lambda e: f"{H}/provisioning/{e.ids['scim_credential']}/revoke",
        CROSS_404_SAME_403,
    ),
    # No id: the tenant's own ceiling. Mallory (no developer.manage_service_tokens) may not change Acme's; another
    # tenant's admin reaches only their own tenant's, so there is nothing of Acme's to probe for them.
    Probe(
        "service-token-ceiling-save",
        "POST",
        H + "/api-keys/service-tokens/ceiling",
        lambda e: f"{H}/api-keys/service-tokens/ceiling",
        {"mallory": FORBIDDEN},
        lambda e: {"mode": "custom", "permissions": "users.read"},
    ),
]
# Pages without an id: they must show the attacker only their own things (status 200 or a 403 page).
LISTS = [
    H,
    H + "/roles",
    H + "/users",
    H + "/api-keys",
    H + "/api-keys/service-tokens/new",
    H + "/api-keys/service-tokens/ceiling",
    H + "/tokens",
    H + "/token-policy",
    H + "/notifications",
    H + "/tenant",
]


def _guess(path: str) -> str:
    return path[:-1] + ("A" if path[-1] != "A" else "B")


def _send(env: Env, attacker: str, method: str, path: str, form: dict[str, str]) -> httpx.Response:
    client = env.client[attacker]
    if method == "GET":
        return client.get(path)
    body = urlencode([*form.items(), ("csrf_token", env.csrf[attacker])]).encode()
    return client.post(path, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})


def _revealed(env: Env, attacker: str, r: httpx.Response) -> list[str]:
    return [s for s in env.secrets(attacker) if s in r.text or any(s in v for v in r.headers.values())]


PAIRS = [(p, a) for p in PROBES for a in ATTACKERS if a in p.expect]


@pytest.mark.parametrize(("probe", "attacker"), PAIRS, ids=[f"{p.id}-{a}" for p, a in PAIRS])
def test_no_page_reaches_another_tenants_or_another_users_objects(env: Env, probe: Probe, attacker: str) -> None:
    if probe.id == "notification-read" and not env.ids["notification"]:
        pytest.skip("notifications are not in this build")
    status, code = probe.expect[attacker]
    before = snapshot(env.svc.db)
    r = _send(env, attacker, probe.method, probe.path(env), probe.form(env) if probe.form else {})
    problems = page_problems(r, status, code)
    revealed = _revealed(env, attacker, r)
    if revealed:
        problems.append(f"reveals {revealed}")
    changed = changed_tables(before, snapshot(env.svc.db))
    if changed:
        problems.append(f"changed tables {changed}")
    assert not problems, f"{probe.id} as {attacker}: {problems} (got {shown_page(r)})"


@pytest.mark.parametrize("attacker", ATTACKERS)
@pytest.mark.parametrize("path", LISTS)
def test_list_pages_show_only_the_callers_own(env: Env, path: str, attacker: str) -> None:
    before = snapshot(env.svc.db)
    r = env.client[attacker].get(path)
    assert r.status_code in (200, 403), shown_page(r)
    revealed = _revealed(env, attacker, r)
    assert not revealed, f"{path} as {attacker} reveals {revealed}"
    assert changed_tables(before, snapshot(env.svc.db)) == []


def test_every_page_with_an_id_is_probed() -> None:
    """A new page route taking an id must be added to PROBES."""
    with_ids = {
        (m, r.path) for r in pages.router.routes for m in getattr(r, "methods", ()) if "{" in getattr(r, "path", "")
    }
    probed = {(p.method, p.template) for p in PROBES}
    every = {(m, r.path) for r in pages.router.routes for m in getattr(r, "methods", ())}
    assert with_ids - probed == set(), f"pages with an id that no attacker tries: {sorted(with_ids - probed)}"
    assert probed - every == set(), f"probes of routes that do not exist: {sorted(probed - every)}"


def test_the_victims_things_are_really_there(env: Env) -> None:
    """The probes mean something: the victim's own pages do show what the attackers may not see."""
    with TestClient(env.client["mallory"].app, follow_redirects=False) as victim:  # type: ignore[attr-defined]
        victim.post("/api/v1/session", json={"email": "dev@acme.test", "password": "dev-password-1"})
        page = victim.get(H + "/api-keys").text
        assert all(name in page for name in env.victim[:2])
        assert victim.get(f"{H}/api-keys/{env.ids['victim_token']}/activity").status_code == 200
