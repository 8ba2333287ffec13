"""The OpenAPI document's finishing touches, worked out from the routes themselves: stable camelCase
operation ids, the security each operation really accepts (with the X-CSRF-Token header that cookie
writes need), only the errors each can give, the headers kbai sends, tag descriptions and servers."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute

from kbai.web.api import ERRORS
from kbai.web.auth import principal, session_only

# Route function name -> operation id, where the name is not already verb_noun (it becomes verbNoun).
OPERATION_IDS = {
    "login": "createSession",
    "logout": "deleteSession",
    "me": "getMe",
    "session_tenants": "listSessionTenants",
    "switch_tenant": "switchSessionTenant",
    "permissions": "listPermissions",
    "audit_log": "listAuditEvents",
    "audit_export": "exportAuditEvents",
    "auth_check": "checkAuth",
    "introspect": "introspectToken",
    "github_leak_report": "reportGithubLeaks",
    "revoke_credentials": "revokeLeakedCredentials",
    "read_notification": "markNotificationRead",
    "token_activity": "getTokenActivity",
    "token_activity_svg": "getTokenActivityHeatmap",
    "admin_tokens": "listTenantTokens",
    "admin_tokens_export": "exportTenantTokens",
    "admin_revoke": "revokeTenantToken",
    "self_rotate_token": "rotateCallingToken",
    "put_policy": "updatePolicy",
    "healthz": "getHealth",
    "livez": "getLiveness",
    "readyz": "getReadiness",
    "metrics": "getMetrics",
}

TAGS = [
    {
        "name": "session",
        "description": "Log in and out. The session cookie is HttpOnly; writes made with it must "
        "send the `csrf_token` of the login answer as `X-CSRF-Token`.",
    },
    {
        "name": "tokens",
        "description": "Your API tokens: create (the full token is shown once), list, revoke, rotate, "
        "and their activity. Managing tokens needs a session: a token cannot mint tokens.",
    },
    {
        "name": "service tokens",
        "description": "Tokens owned by the tenant, not a person (`developer.manage_service_tokens`, with a "
        "session): they survive their creator's deactivation; a tenant ceiling bounds their scopes.",
    },
    {"name": "identity", "description": "Who is calling, and the permission catalog."},
    {"name": "roles", "description": "Roles of your tenant and their permissions (`roles.read`, `roles.manage`)."},
    {"name": "users", "description": "Users of your tenant (`users.read`, `users.manage`)."},
    {"name": "audit", "description": "The append-only audit log of your tenant (`audit.read`)."},
    {"name": "admin", "description": "Every token of your tenant, for reviewers (`developer.review_tokens`)."},
    {"name": "policies", "description": "Your tenant's token policy: lifetime, expiration, auto-revoke, webhook."},
    {"name": "notifications", "description": "Your in-app notifications (expiry reminders, revocations)."},
    {"name": "leaks", "description": "Leaked tokens reported by GitHub secret scanning or by anyone: revoked at once."},
    {
        "name": "gateway",
        "description": "For proxies and resource servers: forward-auth (`/auth/check`) and RFC 7662 "
        "introspection with a service credential.",
    },
    {
        "name": "service credentials",
        "description": "The deployment's introspection credentials, for admins of the "
        "operator tenant (`KBAI_OPERATOR_TENANT`) only.",
    },
    {
        "name": "provisioning",
        "description": "SCIM provisioning credentials of your tenant, for its identity provider "
        "(a session holding every permission of the tenant). SCIM itself is "
        "served at `/scim/v2` and described by its own discovery endpoints.",
    },
    {
        "name": "operator",
        "description": "The operator API for the product's backend (a service credential with the "
        "`tenants` or `tokens` ability): tenants, memberships, and tokens issued on a "
        "person's behalf.",
    },
    {
        "name": "operations",
        "description": "Liveness, readiness, health and Prometheus metrics, for the platform running kbai.",
    },
]
SERVERS = [{"url": "/", "description": "This kbai deployment (paths are relative to where it is served)."}]

VERBS = (
    "get",
    "list",
    "create",
    "update",
    "delete",
    "set",
    "revoke",
    "rotate",
    "pause",
    "resume",
    "deactivate",
    "reactivate",
    "export",
    "check",
    "introspect",
    "report",
    "mark",
    "invite",
    "accept",
    "switch",
    "hand",
)
CAMEL = re.compile(r"^[a-z]+(?:[A-Z][a-z0-9]*)+$|^[a-z]+$")

CSRF_SCHEME = {
    "type": "apiKey",
    "in": "header",
    "name": "X-CSRF-Token",
    "description": "The `csrf_token` from `POST /api/v1/session`: required on every write made with the "
    "session cookie (not with a Bearer token).",
}
HEADERS = {
    "X-Request-Id": {
        "description": "This request's id (yours if you sent a valid `X-Request-Id`); it is on every "
        "log line of the request.",
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "WWW-Authenticate": {
        "description": 'RFC 6750: `Bearer realm="kbai", error="invalid_token", error_description='
        '"..."` (or `Basic realm="kbai"` for a service credential).',
        "schema": {"type": "string"},
    },
}
CHECK_HEADERS = {
    "X-Kbai-User": "The token owner's person id (the same in every tenant they belong to).",
    "X-Kbai-User-Email": "The token owner's email.",
    "X-Kbai-Tenant": "The tenant id (a token acts only in the tenant of the membership that owns it).",
    "X-Kbai-Scopes": "The effective scopes, space-separated, in catalog order.",
    "X-Kbai-Token-Id": "The token's id.",
    "X-Kbai-Tenant-External-Id": "The tenant's external id, when it has one (percent-encoded UTF-8 unless "
    "printable ASCII).",
    "X-Kbai-User-External-Id": "The owner's membership external id, when it has one (percent-encoded UTF-8 "
    "unless printable ASCII).",
}
UNAVAILABLE = {
    "description": "The database cannot be reached right now; retry after `Retry-After` seconds.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
    "headers": {"Retry-After": {"$ref": "#/components/headers/Retry-After"}},
}
WRITES = ("post", "put", "patch", "delete")
UNDOCUMENTED_DB = {"getLiveness", "getMetrics"}  # answer without touching the database


def operation_id(route: APIRoute) -> str:
    """``generate_unique_id_function`` of the app: ``create_token`` -> ``createToken``."""
    head, *rest = OPERATION_IDS.get(route.name, route.name).split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _calls(dependant: Dependant) -> Iterable[Callable[..., Any]]:
    for dep in dependant.dependencies:
        if dep.call is not None:
            yield dep.call
        yield from _calls(dep)


class _Route:
    """What a route's dependencies say about who may call it."""

    def __init__(self, route: APIRoute) -> None:
        calls = list(_calls(route.dependant))
        self.authenticated = principal in calls
        self.session_only = session_only in calls
        # needs(...) (a permission) and manages(...) (a permission, with a session only) both answer 403.
        self.permission = any(getattr(c, "__qualname__", "").startswith(("needs.", "manages.")) for c in calls)
        self.forward_auth = route.name == "auth_check"
        self.operator = any(getattr(c, "__qualname__", "").startswith("operator_needs.") for c in calls)


def refine(schema: dict[str, Any], routes: Iterable[BaseRoute]) -> None:
    """Rewrite ``schema`` (FastAPI's document for ``routes``) in place."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["csrfToken"] = CSRF_SCHEME
    components.setdefault("headers", {}).update(HEADERS)
    schema["tags"] = TAGS
    schema["servers"] = SERVERS
    originals = (ctx.original_route for ctx in iter_route_contexts(list(routes)))  # included routers too
    found = {operation_id(r): _Route(r) for r in originals if isinstance(r, APIRoute) and r.include_in_schema}
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            route = found.get(op.get("operationId", ""))
            if route is not None:
                _security(op, method, route)
                _errors(op, method, path, route)
            _headers(op, route)


def _security(op: dict[str, Any], method: str, route: _Route) -> None:
    if route.operator:
        op["security"] = [{"serviceCredential": []}]
    elif route.forward_auth:
        op["security"] = [{"HTTPBearer": []}]
    elif route.authenticated:
        cookie: dict[str, list[str]] = {"APIKeyCookie": [], **({"csrfToken": []} if method in WRITES else {})}
        op["security"] = [cookie] if route.session_only else [{"HTTPBearer": []}, cookie]


def _errors(op: dict[str, Any], method: str, path: str, route: _Route) -> None:
    """Drop the router-wide errors (``kbai.web.api.ERRORS``) this operation cannot give; add 503."""
    responses = op["responses"]
    security = [name for req in op.get("security", []) for name in req]
    bearer = "HTTPBearer" in security
    has_input = bool(op.get("parameters")) or "requestBody" in op
    can = {
        "401": bool(security) or op.get("operationId") == "createSession",
        "403": route.session_only
        or route.permission
        or route.forward_auth
        or route.operator
        or "csrfToken" in security
        or op.get("operationId") in ("createSession", "listServiceCredentials"),
        "404": "{" in path,
        "422": has_input,
        "429": (bearer and not route.forward_auth) or op.get("operationId") == "createSession",
    }
    for code, possible in can.items():
        generic = ERRORS[int(code)]["description"]
        if code in responses and responses[code].get("description") == generic and not possible:
            del responses[code]
    if op.get("operationId") not in UNDOCUMENTED_DB:
        responses.setdefault("503", UNAVAILABLE)


def _headers(op: dict[str, Any], route: _Route | None) -> None:
    for status, response in op["responses"].items():
        headers = response.setdefault("headers", {})
        headers["X-Request-Id"] = {"$ref": "#/components/headers/X-Request-Id"}
        if status in ("401", "403") and "security" in op:
            headers.setdefault("WWW-Authenticate", {"$ref": "#/components/headers/WWW-Authenticate"})
        if status in ("429", "503") or (status == "401" and route is not None and route.forward_auth):
            headers.setdefault("Retry-After", {"$ref": "#/components/headers/Retry-After"})
        if status == "200" and route is not None and route.forward_auth:
            for name, description in CHECK_HEADERS.items():
                headers[name] = {"description": description, "schema": {"type": "string"}}
