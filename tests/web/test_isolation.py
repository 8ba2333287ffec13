"""Tenants are sealed off, and users are sealed off from each other inside a tenant (no IDOR).

Every endpoint of the JSON API is tried against Acme's objects by four attackers: the admin of
another tenant (Globex, who holds every permission there) with a session and with an all-scopes
token, and a fellow Acme developer (Mallory) with a session and with a token. Each attempt gets a
404 (or a 403 where the caller lacks the permission altogether, or where a token tries to change
users or roles, which needs a session), reveals nothing of the victim
(token names, prefixes, emails, role names), and changes nothing. Runs in-process on both backends.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from kbai.app import create_app
from kbai.clock import FrozenClock
from kbai.config import Settings
from kbai.services import Services
from kbai.store.idempotency import Claim, IdempotencyStore
from tests.conftest import FAST_ARGON2, OPERATOR, build_world
from tests.web.safety import changed_tables, error_problems, shown, snapshot

ATTACKERS = ("globex-session", "globex-token", "mallory-session", "mallory-token")
SECRET_ROLE = "Acme-Secret-Role-Q7"
VICTIM_KEY = "victim-idempotency-key"  # the victim rotated victim-zapier-prod with it (its answer is stored)


@dataclass(repr=False)
class Env:
    svc: Services
    client: dict[str, httpx.Client]  # per attacker (tokens go on the anonymous client)
    csrf: dict[str, str]
    token: dict[str, str]  # plaintext tokens of the attackers; never printed
    ids: dict[str, int]
    victim_token_names: list[str]
    victim_prefixes: list[str]
    basic: str
    hidden: list[str]  # Acme settings only its admins may read (e.g. the policy's webhook URL)

    def __repr__(self) -> str:  # pytest prints fixtures of a failing test: never a token
        return f"Env(ids={self.ids})"

    def request(self, attacker: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if attacker.endswith("-token"):
            headers["Authorization"] = f"Bearer {self.token[attacker]}"
        elif method != "GET":
            headers["X-CSRF-Token"] = self.csrf[attacker]
        return self.client[attacker].request(method, path, headers=headers, **kwargs)

    def secrets(self, attacker: str) -> list[str]:
        """What this attacker must never see: the victim's tokens; across tenants, all of Acme."""
        own = self.victim_token_names + self.victim_prefixes + self.hidden
        if attacker.startswith("globex"):
            own += ["acme.test", "Acme", SECRET_ROLE]
        return own


@pytest.fixture(scope="module")
def env(module_database_url: str) -> Iterator[Env]:
    # Acme is the operator tenant: its admin may manage service credentials, so Globex's admin (every
    # permission, but elsewhere) and Mallory (Acme, not an admin) are the ones refused.
    # (Every attacker fails service-credential authentication on the operator API: not the limit's business here.)
    svc = Services.build(
        Settings(
            database_url=module_database_url,
            operator_tenant="Acme",
            introspection_failures_per_minute=1_000_000,
            **FAST_ARGON2,
        ),
        clock=FrozenClock(),
    )
    acme = build_world(svc)
    globex = build_world(svc, tenant="Globex", domain="globex.test")
    secret_role = svc.access.create_role(OPERATOR, acme.tenant_id, SECRET_ROLE, ["audit.read"])
    svc.access.create_user(OPERATOR, acme.tenant_id, "mallory@acme.test", "mallory-password-1", [acme.dev_role_id])
    svc.access.create_user(OPERATOR, acme.tenant_id, "victim.person@acme.test", "victim-password-1", [secret_role.id])
    gone, _ = svc.access.create_user(OPERATOR, acme.tenant_id, "victim.gone@acme.test", "victim-password-2", ["Member"])
    svc.access.deactivate_user(OPERATOR, gone.id)
    mallory = acme.actor("mallory@acme.test")
    victim_views = [
        svc.tokens.create(acme.dev, name, ["users.read"])[0] for name in ("victim-zapier-prod", "victim-n8n-nightly")
    ]
    svc.tokens.revoke(acme.dev, svc.tokens.create(acme.dev, "victim-revoked-cron", [])[0].id)
    victim_views.append(svc.tokens.list(acme.dev.user_id)[0])  # type: ignore[arg-type]
    # A service token of Acme (owned by the tenant; its admin made it): only Acme's holders of
    # developer.manage_service_tokens may see or revoke it.
    victim_service = svc.tokens.create_service(acme.admin, "victim-service-deploy", ["users.read"])[0]
    all_globex = sorted(svc.catalog.token_usable(globex.admin.permissions))  # every scope a token can have
    tokens = {
        "globex-token": svc.tokens.create(globex.admin, "globex-all", all_globex)[1],
        "mallory-token": svc.tokens.create(
            mallory, "mallory-all", sorted(svc.catalog.token_usable(mallory.permissions))
        )[1],
    }
    credential, secret = svc.credentials.create(OPERATOR, "isolation")
    scim_credential, _ = svc.provisioning.create(OPERATOR, acme.tenant_id, "Acme-Okta-Provisioning-Q7")
    extra_secrets, victim_notification = _victim_extras(svc, acme.tenant_id, acme.dev.user_id)  # type: ignore[arg-type]
    extra_secrets.append(credential.client_id)  # the deployment's credentials: nobody here may see them
    extra_secrets += [scim_credential.name, scim_credential.prefix]  # Acme's SCIM credential: only its admins
    # The victim's remembered answer for a rotation (as the API stores it): another caller sending the same
    # Idempotency-Key to the same route must never be answered with it.
    from kbai.web.idempotency import fingerprint

    keys = IdempotencyStore(svc.db, svc.clock)
    claim = keys.begin(
        f"user:{acme.dev.user_id}",
        "POST /api/v1/tokens/{token_id}/rotate",
        VICTIM_KEY,
        fingerprint({"token_id": victim_views[0].id}, b"{}"),
    )
    assert isinstance(claim, Claim)
    keys.finish(
        claim,
        201,
        {"id": victim_views[0].id, "name": victim_views[0].name, "prefix": victim_views[0].prefix, "token": None},
    )

    app = create_app(svc, start_background=False)
    clients: dict[str, TestClient] = {a: TestClient(app, raise_server_exceptions=False) for a in ATTACKERS}
    csrf = {}
    for attacker, email, password in (
        ("globex-session", "admin@globex.test", "admin-password-1"),
        ("mallory-session", "mallory@acme.test", "mallory-password-1"),
    ):
        r = clients[attacker].post("/api/v1/session", json={"email": email, "password": password})
        assert r.status_code == 200, shown(r)
        csrf[attacker] = r.json()["csrf_token"]
    roles = {r.name: r.id for r in svc.access.list_roles(OPERATOR, acme.tenant_id)}
    victim_person = svc.access.user_by_email("victim.person@acme.test")
    assert victim_person is not None
    ids = {
        "victim_token": victim_views[0].id,
        "victim_revoked_token": victim_views[-1].id,
        "victim_user": acme.dev.user_id,
        "victim_person": victim_person.id,
        "acme_admin": acme.admin.user_id,
        "victim_deactivated": gone.id,
        "acme_admin_role": roles["Admin"],
        "acme_secret_role": secret_role.id,
        "acme_dev_role": acme.dev_role_id,
        "acme": acme.tenant_id,
        "globex": globex.tenant_id,
        "globex-session.user": globex.admin.user_id,
        "globex-token.user": globex.admin.user_id,
        "mallory-session.user": mallory.user_id,
        "mallory-token.user": mallory.user_id,
        "victim_notification": victim_notification,
        "acme_scim_credential": scim_credential.id,
        "victim_service_token": victim_service.id,
    }
    basic = "Basic " + base64.b64encode(f"{credential.client_id}:{secret}".encode()).decode()
    yield Env(
        svc,
        clients,
        csrf,
        tokens,
        ids,
        [v.name for v in [*victim_views, victim_service]],
        [v.prefix for v in [*victim_views, victim_service]],  # type: ignore[arg-type]
        basic,
        extra_secrets,
    )
    for c in clients.values():
        c.close()
    svc.close()


def _victim_extras(svc: Services, tenant_id: int, user_id: int) -> tuple[list[str], int]:
    """Where these features exist (they are being built alongside): a notification for the victim, and a
    webhook URL on Acme's policy. Either may be missing; the rows that need them then skip."""
    hidden: list[str] = []
    notification = 0
    try:
        svc.policies.set(OPERATOR, tenant_id, webhook_url="https://hooks.acme-secret-7f3.example/kbai")
        hidden.append("acme-secret-7f3")
    except (AttributeError, TypeError):
        pass
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
        notification = view.id
        hidden.append("victim-notification")
    except (ImportError, AttributeError, TypeError):
        pass
    return hidden, notification


# ---- the endpoint table -----------------------------------------------------------------------------
Check = Callable[[httpx.Response, Env, str], list[str]]


def _none(_: httpx.Response, __: Env, ___: str) -> list[str]:
    return []


def _own_tokens_only(r: httpx.Response, env: Env, attacker: str) -> list[str]:
    ids = {t["id"] for t in r.json()["tokens"]}
    return ["lists a victim token"] if ids & {env.ids["victim_token"], env.ids["victim_revoked_token"]} else []


def _tenant_roles(r: httpx.Response, env: Env, attacker: str) -> list[str]:
    ids = {role["id"] for role in r.json()["roles"]}
    acme = {env.ids["acme_admin_role"], env.ids["acme_secret_role"], env.ids["acme_dev_role"]}
    if attacker.startswith("globex"):
        return ["lists Acme roles"] if ids & acme else []
    return [] if acme <= ids else ["misses its own tenant's roles"]


def _tenant_users(r: httpx.Response, env: Env, attacker: str) -> list[str]:
    emails = {u["email"] for u in r.json()["users"]}
    if attacker.startswith("globex"):
        return [] if emails == {"admin@globex.test", "dev@globex.test"} else ["lists users of another tenant"]
    return [] if "dev@acme.test" in emails else ["misses its own tenant's users"]


def _no_events(r: httpx.Response, env: Env, attacker: str) -> list[str]:
    return ["shows events of another tenant"] if r.json()["events"] else []


def _own_events(r: httpx.Response, env: Env, attacker: str) -> list[str]:
    """Globex's own log is there (so the emptiness of the filtered queries means something)."""
    return [] if r.json()["events"] else ["no events at all"]


def _no_victim_tokens(r: httpx.Response, env: Env, attacker: str) -> list[str]:
    if not r.headers.get("content-type", "").startswith("application/json"):
        return []
    ids = {t["id"] for t in r.json()["tokens"]}
    return ["lists a victim token"] if ids & {env.ids["victim_token"], env.ids["victim_revoked_token"]} else []


def _no_victim_service_token(r: httpx.Response, env: Env, attacker: str) -> list[str]:
    ids = {t["id"] for t in r.json()["tokens"]}
    return ["lists Acme's service token"] if env.ids["victim_service_token"] in ids else []


def _own_notifications(r: httpx.Response, env: Env, attacker: str) -> list[str]:
    ids = {n["id"] for n in r.json()["notifications"]}
    return ["lists the victim's notification"] if env.ids["victim_notification"] in ids else []


def _me_is_self(r: httpx.Response, env: Env, attacker: str) -> list[str]:
    me = r.json()
    tenant = env.ids["globex"] if attacker.startswith("globex") else env.ids["acme"]
    problems = [] if me["user"]["id"] == env.ids[f"{attacker}.user"] else ["me is someone else"]
    return problems + ([] if me["tenant"]["id"] == tenant else ["me is in another tenant"])


def _check_headers_are_self(r: httpx.Response, env: Env, attacker: str) -> list[str]:
    tenant = env.ids["globex"] if attacker.startswith("globex") else env.ids["acme"]
    problems = [] if r.headers["x-kbai-tenant"] == str(tenant) else ["X-Kbai-Tenant is another tenant"]
    return problems + (
        [] if r.headers["x-kbai-user"] == str(env.ids[f"{attacker}.user"]) else ["X-Kbai-User is not self"]
    )


def _own_tenants_only(r: httpx.Response, env: Env, attacker: str) -> list[str]:
    tenant = env.ids["globex"] if attacker.startswith("globex") else env.ids["acme"]
    listed = [t["id"] for t in r.json()["tenants"]]
    return [] if listed == [tenant] and r.json()["current"] == tenant else [f"lists tenants {listed}"]


@dataclass(frozen=True)
class Endpoint:
    id: str
    method: str
    path: Callable[[Env, str], str]
    # attacker -> (status, code for errors); "cross"/"same" and "-session"/"-token" defaults below
    expect: dict[str, tuple[int, str]]
    body: Callable[[Env, str], Any] | None = None
    params: dict[str, str] | Callable[[Env, str], dict[str, Any]] | None = None
    ok: Check = _none  # extra checks of a 200
    headers: dict[str, str] | None = None


def _client_id(env: Env) -> str:
    """The client id of the module's service credential (from its HTTP Basic header)."""
    return base64.b64decode(env.basic.split()[1]).decode().split(":")[0]


def _all(status: int, code: str = "") -> dict[str, tuple[int, str]]:
    return {a: (status, code) for a in ATTACKERS}


def _by(
    cross: tuple[int, str],
    same_session: tuple[int, str],
    same_token: tuple[int, str],
    cross_token: tuple[int, str] | None = None,
) -> dict[str, tuple[int, str]]:
    return {
        "globex-session": cross,
        "globex-token": cross_token or cross,
        "mallory-session": same_session,
        "mallory-token": same_token,
    }


NOT_FOUND = (404, "not_found")
SESSION_ONLY = (403, "session_required")
FORBIDDEN = (403, "forbidden")
NO_SCOPE = (403, "insufficient_scope")
OK = (200, "")
T = "/api/v1/tokens"
# Changes to users and roles: never with a token (403 session_required before anything is looked up), and
# with a session 404 across tenants, 403 for a colleague without the permission (422 for a foreign role id).
WRITE_404 = _by(NOT_FOUND, FORBIDDEN, SESSION_ONLY, cross_token=SESSION_ONLY)
WRITE_422 = _by((422, "validation_error"), FORBIDDEN, SESSION_ONLY, cross_token=SESSION_ONLY)


def _no_acme_scim_credential(r: httpx.Response, env: Env, attacker: str) -> list[str]:
    listed = r.json()["scim_credentials"]
    return [] if all(c["id"] != env.ids["acme_scim_credential"] for c in listed) else ["lists Acme's SCIM credential"]


ENDPOINTS = [
    Endpoint("get-victim-token", "GET", lambda e, a: f"{T}/{e.ids['victim_token']}", _all(*NOT_FOUND)),
    Endpoint("get-victim-revoked-token", "GET", lambda e, a: f"{T}/{e.ids['victim_revoked_token']}", _all(*NOT_FOUND)),
    Endpoint("revoke-victim-token", "POST", lambda e, a: f"{T}/{e.ids['victim_token']}/revoke", _all(*NOT_FOUND)),
    Endpoint(
        "rotate-victim-token",
        "POST",
        lambda e, a: f"{T}/{e.ids['victim_token']}/rotate",
        _by(NOT_FOUND, NOT_FOUND, SESSION_ONLY, cross_token=SESSION_ONLY),
        body=lambda e, a: {},
    ),
    Endpoint(
        "rotate-victim-token-with-victims-idempotency-key",
        "POST",
        lambda e, a: f"{T}/{e.ids['victim_token']}/rotate",
        _by(NOT_FOUND, NOT_FOUND, SESSION_ONLY, cross_token=SESSION_ONLY),
        body=lambda e, a: {},
        headers={"Idempotency-Key": VICTIM_KEY},
    ),
    Endpoint("pause-victim-token", "POST", lambda e, a: f"{T}/{e.ids['victim_token']}/pause", _all(*NOT_FOUND)),
    Endpoint(
        "resume-victim-token",
        "POST",
        lambda e, a: f"{T}/{e.ids['victim_token']}/resume",
        _by(NOT_FOUND, NOT_FOUND, SESSION_ONLY, cross_token=SESSION_ONLY),
    ),
    Endpoint(
        "change-victim-token",
        "PATCH",
        lambda e, a: f"{T}/{e.ids['victim_token']}",
        _by(NOT_FOUND, NOT_FOUND, SESSION_ONLY, cross_token=SESSION_ONLY),
        body=lambda e, a: {"name": "pwned", "allowed_ips": ["0.0.0.0/0"]},
    ),
    Endpoint(
        "widen-victim-token-scopes",
        "PATCH",
        lambda e, a: f"{T}/{e.ids['victim_token']}",
        _by(NOT_FOUND, NOT_FOUND, SESSION_ONLY, cross_token=SESSION_ONLY),
        body=lambda e, a: {"scopes": ["users.read", "roles.read"]},
    ),
    # Only a token may rotate itself, and only one made with self_rotate (no attacker's is).
    Endpoint(
        "self-rotate",
        "POST",
        lambda e, a: f"{T}/self/rotate",
        _by(
            (403, "token_required"),
            (403, "token_required"),
            (403, "self_rotate_not_enabled"),
            cross_token=(403, "self_rotate_not_enabled"),
        ),
        body=lambda e, a: {},
    ),
    Endpoint(
        "list-tokens", "GET", lambda e, a: T, _by(OK, OK, SESSION_ONLY, cross_token=SESSION_ONLY), ok=_own_tokens_only
    ),
    Endpoint(
        "list-tokens-from-victim-cursor",
        "GET",
        lambda e, a: T,
        _by(OK, OK, SESSION_ONLY, cross_token=SESSION_ONLY),
        params=lambda e, a: {"cursor": str(e.ids["victim_revoked_token"] + 1)},
        ok=_own_tokens_only,
    ),
    Endpoint("list-roles", "GET", lambda e, a: "/api/v1/roles", _all(*OK), ok=_tenant_roles),
    Endpoint(
        "get-victim-role", "GET", lambda e, a: f"/api/v1/roles/{e.ids['acme_secret_role']}", _by(NOT_FOUND, OK, OK)
    ),
    Endpoint(
        "change-victim-role",
        "PUT",
        lambda e, a: f"/api/v1/roles/{e.ids['acme_secret_role']}",
        WRITE_404,
        body=lambda e, a: {"permissions": ["users.manage", "roles.manage"]},
    ),
    Endpoint(
        "rename-victim-admin-role",
        "PUT",
        lambda e, a: f"/api/v1/roles/{e.ids['acme_admin_role']}",
        WRITE_404,
        body=lambda e, a: {"name": "Pwned"},
    ),
    Endpoint("list-users", "GET", lambda e, a: "/api/v1/users", _all(*OK), ok=_tenant_users),
    Endpoint(
        "create-user-with-victim-role",
        "POST",
        lambda e, a: "/api/v1/users",
        WRITE_422,
        body=lambda e, a: {"email": "intruder@globex.test", "roles": [e.ids["acme_admin_role"]]},
    ),
    Endpoint(
        "grant-self-victim-admin-role",
        "PUT",
        lambda e, a: f"/api/v1/users/{e.ids[a + '.user']}/roles",
        WRITE_422,
        body=lambda e, a: {"roles": ["Admin", e.ids["acme_admin_role"]]},
    ),
    Endpoint(
        "set-victim-roles",
        "PUT",
        lambda e, a: f"/api/v1/users/{e.ids['victim_user']}/roles",
        WRITE_404,
        body=lambda e, a: {"roles": ["Member"]},
    ),
    Endpoint("deactivate-victim", "POST", lambda e, a: f"/api/v1/users/{e.ids['victim_user']}/deactivate", WRITE_404),
    Endpoint(
        "deactivate-victim-admin", "POST", lambda e, a: f"/api/v1/users/{e.ids['acme_admin']}/deactivate", WRITE_404
    ),
    Endpoint(
        "reactivate-victim", "POST", lambda e, a: f"/api/v1/users/{e.ids['victim_deactivated']}/reactivate", WRITE_404
    ),
    Endpoint(
        "reactivate-victim-active-admin",
        "POST",
        lambda e, a: f"/api/v1/users/{e.ids['acme_admin']}/reactivate",
        WRITE_404,
    ),
    Endpoint("audit", "GET", lambda e, a: "/api/v1/audit", _by(OK, FORBIDDEN, NO_SCOPE), ok=_own_events),
    Endpoint(
        "audit-by-victim",
        "GET",
        lambda e, a: "/api/v1/audit",
        _by(OK, FORBIDDEN, NO_SCOPE),
        params=lambda e, a: {"actor_user_id": e.ids["victim_user"]},
        ok=_no_events,
    ),
    Endpoint(
        "audit-of-victim-token",
        "GET",
        lambda e, a: "/api/v1/audit",
        _by(OK, FORBIDDEN, NO_SCOPE),
        params=lambda e, a: {"target_type": "token", "target_id": str(e.ids["victim_token"])},
        ok=_no_events,
    ),
    Endpoint(
        "audit-before-victim-cursor",
        "GET",
        lambda e, a: "/api/v1/audit",
        _by(OK, FORBIDDEN, NO_SCOPE),
        params={"cursor": "2147483647", "limit": "200"},
    ),
    Endpoint(
        "audit-export-json",
        "GET",
        lambda e, a: "/api/v1/audit/export",
        _by(OK, FORBIDDEN, NO_SCOPE),
        params={"format": "json"},
        ok=_own_events,
    ),
    Endpoint(
        "audit-export-csv",
        "GET",
        lambda e, a: "/api/v1/audit/export",
        _by(OK, FORBIDDEN, NO_SCOPE),
        params={"format": "csv"},
    ),
    Endpoint("me", "GET", lambda e, a: "/api/v1/me", _all(*OK), ok=_me_is_self),
    # People in several tenants: switching into a tenant one is not a member of is the same 404 as into none,
    # and listing one's tenants shows one's own only; a token does neither (it acts in one tenant only).
    Endpoint(
        "switch-into-victim-tenant",
        "POST",
        lambda e, a: "/api/v1/session/tenant",
        _by((404, "not_a_member"), (404, "not_a_member"), SESSION_ONLY, cross_token=SESSION_ONLY),
        body=lambda e, a: {"tenant": e.ids["acme"] if a.startswith("globex") else e.ids["globex"]},
    ),
    Endpoint(
        "switch-into-victim-tenant-by-name",
        "POST",
        lambda e, a: "/api/v1/session/tenant",
        _by((404, "not_a_member"), (404, "not_a_member"), SESSION_ONLY, cross_token=SESSION_ONLY),
        body=lambda e, a: {"tenant": "Acme" if a.startswith("globex") else "Globex"},
    ),
    Endpoint(
        "list-session-tenants",
        "GET",
        lambda e, a: "/api/v1/session/tenants",
        _by(OK, OK, SESSION_ONLY, cross_token=SESSION_ONLY),
        ok=_own_tenants_only,
    ),
    Endpoint("permissions", "GET", lambda e, a: "/api/v1/permissions", _all(*OK)),
    Endpoint(
        "auth-check",
        "GET",
        lambda e, a: "/auth/check",
        _by((401, "not_authenticated"), (401, "not_authenticated"), OK, cross_token=OK),
        ok=_check_headers_are_self,
    ),
    Endpoint(
        "auth-check-demanding-victim-scopes",
        "GET",
        lambda e, a: "/auth/check",
        _by((401, "not_authenticated"), (401, "not_authenticated"), NO_SCOPE, cross_token=OK),
        params={"scope": ["users.read", "audit.read"]},
        ok=_check_headers_are_self,
    ),
    # Routes of features being built alongside (activity, inventory, notifications, policies): tried when present.
    Endpoint("activity-of-victim-token", "GET", lambda e, a: f"{T}/{e.ids['victim_token']}/activity", _all(*NOT_FOUND)),
    Endpoint(
        "heatmap-of-victim-token",
        "GET",
        lambda e, a: f"{T}/{e.ids['victim_token']}/activity/heatmap.svg",
        _all(*NOT_FOUND),
    ),
    Endpoint(
        "tenant-token-inventory",
        "GET",
        lambda e, a: "/api/v1/admin/tokens",
        _by(OK, FORBIDDEN, NO_SCOPE),
        ok=_no_victim_tokens,
    ),
    Endpoint(
        "tenant-token-inventory-of-victim",
        "GET",
        lambda e, a: "/api/v1/admin/tokens",
        _by(OK, FORBIDDEN, NO_SCOPE),
        params={"owner": "dev@acme.test"},
        ok=_no_victim_tokens,
    ),
    Endpoint("tenant-token-export", "GET", lambda e, a: "/api/v1/admin/tokens/export", _by(OK, FORBIDDEN, NO_SCOPE)),
    Endpoint(
        "admin-revoke-victim-token",
        "POST",
        lambda e, a: f"/api/v1/admin/tokens/{e.ids['victim_token']}/revoke",
        _by(NOT_FOUND, FORBIDDEN, NO_SCOPE),
    ),
    Endpoint(
        "notifications",
        "GET",
        lambda e, a: "/api/v1/notifications",
        _by(OK, OK, SESSION_ONLY, cross_token=SESSION_ONLY),
        ok=_own_notifications,
    ),
    Endpoint(
        "read-victim-notification",
        "POST",
        lambda e, a: f"/api/v1/notifications/{e.ids['victim_notification']}/read",
        _by(NOT_FOUND, NOT_FOUND, SESSION_ONLY, cross_token=SESSION_ONLY),
    ),
    Endpoint("policy", "GET", lambda e, a: "/api/v1/policies", _all(*OK)),
    # Service tokens: a session holding developer.manage_service_tokens in its own tenant (Globex's admin
    # sees Globex's, never Acme's); a colleague without it is refused; a token never manages them.
    Endpoint(
        "list-service-tokens",
        "GET",
        lambda e, a: "/api/v1/service-tokens",
        _by(OK, FORBIDDEN, SESSION_ONLY, cross_token=SESSION_ONLY),
        ok=_no_victim_service_token,
    ),
    Endpoint(
        "list-service-tokens-from-victim-cursor",
        "GET",
        lambda e, a: "/api/v1/service-tokens",
        _by(OK, FORBIDDEN, SESSION_ONLY, cross_token=SESSION_ONLY),
        params=lambda e, a: {"cursor": str(e.ids["victim_service_token"] + 1)},
        ok=_no_victim_service_token,
    ),
    Endpoint(
        "revoke-victim-service-token",
        "POST",
        lambda e, a: f"/api/v1/service-tokens/{e.ids['victim_service_token']}/revoke",
        _by(NOT_FOUND, FORBIDDEN, SESSION_ONLY, cross_token=SESSION_ONLY),
    ),
    Endpoint(
        "rotate-victim-service-token",
        "POST",
        lambda e, a: f"/api/v1/service-tokens/{e.ids['victim_service_token']}/rotate",
        _by(NOT_FOUND, FORBIDDEN, SESSION_ONLY, cross_token=SESSION_ONLY),
        body=lambda e, a: {},
    ),
    Endpoint(
        "rotate-victim-service-token-as-personal",
        "POST",
        lambda e, a: f"{T}/{e.ids['victim_service_token']}/rotate",
        _by(NOT_FOUND, NOT_FOUND, SESSION_ONLY, cross_token=SESSION_ONLY),
        body=lambda e, a: {},
    ),
    Endpoint(
        "patch-victim-service-token",
        "PATCH",
        lambda e, a: f"{T}/{e.ids['victim_service_token']}",
        _by(NOT_FOUND, NOT_FOUND, SESSION_ONLY, cross_token=SESSION_ONLY),
        body=lambda e, a: {"name": "taken over", "rate_limit": None},
    ),
    Endpoint(
        "revoke-victim-service-token-as-personal",
        "POST",
        lambda e, a: f"{T}/{e.ids['victim_service_token']}/revoke",
        _all(*NOT_FOUND),
    ),
    Endpoint(
        "service-token-ceiling",
        "GET",
        lambda e, a: "/api/v1/service-tokens/ceiling",
        _by(OK, FORBIDDEN, SESSION_ONLY, cross_token=SESSION_ONLY),
    ),
    # (null is the default already: Globex's admin changes nothing of its own either)
    Endpoint(
        "set-service-token-ceiling",
        "PUT",
        lambda e, a: "/api/v1/service-tokens/ceiling",
        _by(OK, FORBIDDEN, SESSION_ONLY, cross_token=SESSION_ONLY),
        body=lambda e, a: {"permissions": None},
    ),
    Endpoint("victim-user-tokens", "GET", lambda e, a: f"/api/v1/users/{e.ids['victim_user']}/tokens", WRITE_404),
    Endpoint(
        "deactivate-victim-handing-over-its-token",
        "POST",
        lambda e, a: f"/api/v1/users/{e.ids['victim_user']}/deactivate",
        WRITE_404,
        body=lambda e, a: {"hand_over": [e.ids["victim_token"]]},
    ),
    Endpoint("list-service-credentials", "GET", lambda e, a: "/api/v1/service-credentials", _all(403, "forbidden")),
    Endpoint(
        "revoke-service-credential",
        "POST",
        lambda e, a: f"/api/v1/service-credentials/{_client_id(e)}/revoke",
        _all(403, "forbidden"),
    ),
    # SCIM provisioning credentials: a session holding every permission of its own tenant (Globex's admin sees
    # Globex's list, never Acme's); a colleague is refused; a token never manages them.
    Endpoint(
        "list-scim-credentials",
        "GET",
        lambda e, a: "/api/v1/scim-credentials",
        _by(OK, FORBIDDEN, SESSION_ONLY, cross_token=SESSION_ONLY),
        ok=_no_acme_scim_credential,
    ),
    Endpoint(
        "revoke-victim-scim-credential",
        "POST",
        lambda e, a: f"/api/v1/scim-credentials/{e.ids['acme_scim_credential']}/revoke",
        _by(NOT_FOUND, FORBIDDEN, SESSION_ONLY, cross_token=SESSION_ONLY),
    ),
    # The operator API: a service credential (HTTP Basic) or nothing; no session or token ever gets in.
    *[
        Endpoint(f"operator-{name}", method, path, _all(401, "invalid_client"), body=body)
        for name, method, path, body in (
            (
                "create-tenant",
                "POST",
                lambda e, a: "/api/v1/operator/tenants",
                lambda e, a: {"name": "Pwned", "external_id": "pwned"},
            ),
            ("get-victim-tenant", "GET", lambda e, a: f"/api/v1/operator/tenants/{e.ids['acme']}", None),
            (
                "rename-victim-tenant",
                "PATCH",
                lambda e, a: f"/api/v1/operator/tenants/{e.ids['acme']}",
                lambda e, a: {"name": "Pwned"},
            ),
            (
                "join-victim-tenant",
                "POST",
                lambda e, a: f"/api/v1/operator/tenants/{e.ids['acme']}/memberships",
                lambda e, a: {"email": "intruder@globex.test", "roles": ["Admin"]},
            ),
            (
                "deactivate-victim",
                "POST",
                lambda e, a: f"/api/v1/operator/memberships/{e.ids['victim_user']}/deactivate",
                None,
            ),
            (
                "token-for-victim",
                "POST",
                lambda e, a: f"/api/v1/operator/memberships/{e.ids['victim_user']}/tokens",
                lambda e, a: {"name": "pwned", "scopes": ["users.read"]},
            ),
        )
    ],
    Endpoint(
        "operator-find-victim-tenant",
        "GET",
        lambda e, a: "/api/v1/operator/tenants",
        _all(401, "invalid_client"),
        params={"external_id": "acme"},
    ),
    Endpoint(
        "introspect-without-credential",
        "POST",
        lambda e, a: "/api/v1/introspect",
        _all(401, "invalid_client"),
        body=lambda e, a: {"token": e.token.get(a, "kbai_pk_" + "0" * 64)},
    ),
]


@pytest.mark.parametrize("attacker", ATTACKERS)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.id for e in ENDPOINTS])
def test_no_way_into_another_tenant_or_another_users_tokens(env: Env, endpoint: Endpoint, attacker: str) -> None:
    if not _route_exists(env, endpoint) or (
        endpoint.id == "read-victim-notification" and not env.ids["victim_notification"]
    ):
        pytest.skip(f"{endpoint.method} {endpoint.id}: no such route (or victim object) in this build")
    status, code = endpoint.expect[attacker]
    before = snapshot(env.svc.db)
    kwargs: dict[str, Any] = {}
    if endpoint.body is not None:
        kwargs["json"] = endpoint.body(env, attacker)
    if endpoint.params is not None:
        kwargs["params"] = endpoint.params(env, attacker) if callable(endpoint.params) else endpoint.params
    if endpoint.headers is not None:
        kwargs["headers"] = endpoint.headers
    r = env.request(attacker, endpoint.method, endpoint.path(env, attacker), **kwargs)
    if status >= 400:
        problems = error_problems(r, status, code)
    else:
        problems = [] if r.status_code == status else [f"status {r.status_code}, expected {status}"]
        problems += endpoint.ok(r, env, attacker) if not problems else []
    revealed = [s for s in env.secrets(attacker) if s in r.text or any(s in v for v in r.headers.values())]
    if revealed:
        problems.append(f"reveals {revealed}")
    changed = changed_tables(before, snapshot(env.svc.db))
    if changed:
        problems.append(f"changed tables {changed}")
    assert not problems, f"{endpoint.id} as {attacker}: {problems} (got {shown(r)})"


def test_the_table_covers_every_json_api_route(env: Env) -> None:
    """A new route must be added to the table (or to the short list of routes with no victim to attack)."""
    routes = _routes(env)
    assert ("GET", "/api/v1/tokens/{token_id}") in routes  # the document is what we think it is
    covered = set()
    for ep in ENDPOINTS:
        path = ep.path(env, "globex-session")
        for method, template in routes:
            if method == ep.method and _matches(template, path):
                covered.add((method, template))
    no_victim = {
        # the caller's own session, or objects made in the caller's own tenant (see the tests below)
        ("POST", "/api/v1/session"),
        ("DELETE", "/api/v1/session"),
        ("POST", "/api/v1/tokens"),
        ("POST", "/api/v1/service-tokens"),
        ("POST", "/api/v1/roles"),
        ("PUT", "/api/v1/policies"),
        ("POST", "/api/v1/scim-credentials"),
        # public leak reporting: no caller identity at all (tests/leaks)
        ("POST", "/api/v1/credentials/revoke"),
        ("POST", "/api/v1/secret-scanning/github"),
    }
    missing = sorted(routes - covered - no_victim)
    assert not missing, f"routes not tried by an attacker: {missing}"


def _routes(env: Env) -> set[tuple[str, str]]:
    paths = env.client["globex-session"].get("/openapi.json").json()["paths"]
    return {
        (method.upper(), path) for path, ops in paths.items() for method in ops if path.startswith(("/api/v1", "/auth"))
    }


def _route_exists(env: Env, endpoint: Endpoint) -> bool:
    path = endpoint.path(env, "globex-session")
    return any(m == endpoint.method and _matches(t, path) for m, t in _routes(env))


def _matches(template: str, path: str) -> bool:
    t_parts, p_parts = template.strip("/").split("/"), path.strip("/").split("/")
    return len(t_parts) == len(p_parts) and all(
        t == p or t.startswith("{") for t, p in zip(t_parts, p_parts, strict=True)
    )


# ---- what an attacker may do in their own space reveals nothing either --------------------------
@contextmanager
def _client(env: Env) -> Iterator[TestClient]:
    """A fresh cookie jar on the same app (no lifespan: the module's services keep running)."""
    client = TestClient(env.client["globex-session"].app, raise_server_exceptions=False)  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        client.close()


def test_a_token_name_taken_by_another_user_is_free_for_me(env: Env) -> None:
    """Name uniqueness is per user: a 409 here would tell a colleague the name of a victim's token."""
    svc = env.svc
    svc.access.create_user(
        OPERATOR, env.ids["acme"], "newcomer@acme.test", "newcomer-password-1", [env.ids["acme_dev_role"]]
    )
    with _client(env) as client:
        r = client.post("/api/v1/session", json={"email": "newcomer@acme.test", "password": "newcomer-password-1"})
        h = {"X-CSRF-Token": r.json()["csrf_token"]}
        r = client.post(T, json={"name": env.victim_token_names[0], "scopes": []}, headers=h)
        assert r.status_code == 201, shown(r)
        assert client.post(f"{T}/{r.json()['id']}/revoke", headers=h).status_code == 200


def test_a_role_name_of_another_tenant_is_free_in_mine(env: Env) -> None:
    """Role names are per tenant: a 409 here would tell another tenant what Acme's roles are called."""
    initech = build_world(env.svc, tenant="Initech", domain="initech.test")
    with _client(env) as client:
        r = client.post("/api/v1/session", json={"email": "admin@initech.test", "password": "admin-password-1"})
        h = {"X-CSRF-Token": r.json()["csrf_token"]}
        r = client.post("/api/v1/roles", json={"name": SECRET_ROLE, "permissions": []}, headers=h)
        assert r.status_code == 201, shown(r)
    assert SECRET_ROLE in {x.name for x in env.svc.access.list_roles(OPERATOR, initech.tenant_id)}
    assert [x.name for x in env.svc.access.list_roles(OPERATOR, env.ids["acme"])].count(SECRET_ROLE) == 1


def test_tokens_of_one_tenant_act_only_in_their_own(env: Env) -> None:
    """Introspection and forward-auth name the token's own tenant and user, never the one it is used on."""
    for attacker in ("globex-token", "mallory-token"):
        tenant = env.ids["globex"] if attacker.startswith("globex") else env.ids["acme"]
        anon = env.client[attacker]
        r = anon.post("/api/v1/introspect", data={"token": env.token[attacker]}, headers={"Authorization": env.basic})
        assert r.status_code == 200 and r.json()["active"] is True, shown(r)
        assert r.json()["tenant"] == str(tenant) and r.json()["sub"] == str(env.ids[f"{attacker}.user"])
        r = anon.get("/api/v1/me", headers={"Authorization": f"Bearer {env.token[attacker]}"})
        assert r.json()["tenant"]["id"] == tenant
    # A Globex token holding every scope still reads only Globex.
    auth = {"Authorization": f"Bearer {env.token['globex-token']}"}
    client = env.client["globex-token"]
    users = client.get("/api/v1/users", headers=auth).json()["users"]
    assert {u["email"].split("@")[1] for u in users} == {"globex.test"}
    events = client.get("/api/v1/audit", params={"limit": 200}, headers=auth).json()["events"]
    leaked = [e for e in events if "acme" in str(e).lower()]
    assert not leaked and events


# ---- the sign-in routes (pages outside the OpenAPI document): nobody finishes someone else's sign-in --
from tests.identity.conftest import make_rig, oidc_provider, provider_keys  # noqa: E402, F401 - fixtures
from tests.identity.provider import login_at_provider  # noqa: E402
from tests.web.safety import page_problems, shown_page  # noqa: E402


@dataclass(frozen=True)
class SignInProbe:
    id: str
    route: tuple[str, str]
    status: int
    code: str
    # (rig, attacker client, the victim's callback path) -> the path the attacker requests
    path: Callable[[Any, TestClient, str], str]


def _victims_callback(rig: Any, attacker: TestClient, victim_path: str) -> str:
    return victim_path


def _victims_code_in_own_flow(rig: Any, attacker: TestClient, victim_path: str) -> str:
    own = login_at_provider(rig.start(attacker), "mallory", "pw").params  # the attacker's own flow and state
    code = dict(p.split("=", 1) for p in victim_path.split("?", 1)[1].split("&"))["code"]
    return f"/oidc/callback?code={code}&state={own['state']}&iss={own['iss']}"


def _login_to_elsewhere(rig: Any, attacker: TestClient, victim_path: str) -> str:
    return "/oidc/login?next=https://evil.example/steal"


SIGN_IN_PROBES = [
    SignInProbe(
        "callback-with-the-victims-code-and-state",
        ("GET", "/oidc/callback"),
        400,
        "oidc_state_mismatch",
        _victims_callback,
    ),
    SignInProbe(
        "the-victims-code-in-the-attackers-own-flow",
        ("GET", "/oidc/callback"),
        401,
        "oidc_code_rejected",
        _victims_code_in_own_flow,
    ),
    SignInProbe("login-sending-the-session-elsewhere", ("GET", "/oidc/login"), 303, "", _login_to_elsewhere),
]


@pytest.mark.parametrize("attacker", ["globex-session", "mallory-session"])
@pytest.mark.parametrize("probe", SIGN_IN_PROBES, ids=[p.id for p in SIGN_IN_PROBES])
@pytest.mark.parametrize("backend", ["sqlite"])
def test_no_one_finishes_another_persons_sign_in(
    database_url: str, oidc_provider: Any, probe: SignInProbe, attacker: str
) -> None:
    """The victim (an Acme developer) got a code from the provider; an attacker with a session of their own
    (Globex's admin, or Mallory of Acme) presents it. Their session stays theirs, nothing changes, no session
    of the victim's appears, and a login's ``next`` never leads off the site."""
    rig = make_rig(database_url, oidc_provider)
    globex, _, _ = rig.svc.access.create_tenant(
        OPERATOR, "Globex", "admin@globex.test", "admin-password-1", external_id="org-globex"
    )
    rig.svc.access.create_user(OPERATOR, rig.tenant_id, "mallory@acme.test", "mallory-password-1", [rig.dev_role_id])
    for login, tenant in (("victim", "org-acme"), ("mallory", "org-acme")):
        oidc_provider.set_account(
            login, "pw", email=f"{login}@acme.test", email_verified=True, org_id=tenant, roles=["Developers"]
        )
    email = {"globex-session": "admin@globex.test", "mallory-session": "mallory@acme.test"}[attacker]
    password = {"globex-session": "admin-password-1", "mallory-session": "mallory-password-1"}[attacker]
    try:
        with rig.client() as victim, rig.client() as client:
            victim_path = rig.callback_for(victim, "victim")
            path = probe.path(rig, client, victim_path)  # (an own flow is started before the attacker logs in)
            assert client.post("/api/v1/session", json={"email": email, "password": password}).status_code == 200
            before = snapshot(rig.svc.db)
            r = client.get(path)
            if probe.status >= 400:
                problems = page_problems(r, probe.status, probe.code)
            else:
                problems = (
                    []
                    if r.status_code == probe.status and r.headers["location"] == "/system-settings"
                    else [f"went to {r.headers.get('location')}"]
                )
            problems += (
                [f"changed tables {changed_tables(before, snapshot(rig.svc.db))}"]
                if changed_tables(before, snapshot(rig.svc.db))
                else []
            )
            if "victim@acme.test" in r.text or "kbai_session=" in r.headers.get("set-cookie", ""):
                problems.append("reveals the victim or opens a session")
            me = client.get("/api/v1/me").json()
            if me["user"]["email"] != email:
                problems.append(f"the attacker's session is now {me['user']['email']}")
            assert rig.svc.access.user_by_email("victim@acme.test") is None
            assert not problems, f"{probe.id} as {attacker}: {problems} ({shown_page(r)})"
    finally:
        rig.svc.close()
    assert globex.external_id == "org-globex"


def test_the_sign_in_table_covers_every_oidc_route() -> None:
    from kbai.web import oidc

    routes = {(m, r.path) for r in oidc.router.routes for m in getattr(r, "methods", ()) if m != "HEAD"}
    assert routes == {p.route for p in SIGN_IN_PROBES}, routes
