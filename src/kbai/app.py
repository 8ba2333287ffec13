"""The FastAPI application factory used by ``kbai serve``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from kbai import __version__
from kbai.cache.bus import LocalBus
from kbai.config import get_settings
from kbai.gateway import routes as gateway_routes
from kbai.gateway.check import ForwardAuth
from kbai.services import Services
from kbai.web import api, brand, docs, errors, oidc, pages, prefix
from kbai.web import credentials as credential_routes
from kbai.web import leaks as leak_routes
from kbai.web import lifecycle as lifecycle_routes
from kbai.web import openapi as openapi_doc
from kbai.web import operator as operator_routes
from kbai.web import provisioning as provisioning_routes
from kbai.web import scim as scim_routes
from kbai.web.middleware import KbaiMiddleware
from kbai.web.proxy import ForwardedClient

DESCRIPTION = """Developer API tokens: create scoped, expiring tokens, use them as
`Authorization: Bearer kbai_pk_...`, revoke them. Token management needs a session
(`POST /api/v1/session`); cookie-authenticated writes must send `X-CSRF-Token`.
Errors are `{"error": {"code", "message"}}`."""


# OpenAPI links: what the id in a created resource can be used for next. Clients and stateful test tools
# (schemathesis follows them: tests/web/test_schemathesis_stateful.py) chain calls with them.
# (method, path, status) of the source -> link name -> (method, path) of the target; every link passes
# the new resource's id (`$response.body#/id`) as the target's one path parameter.
_TOKEN_NEXT = {
    "GetToken": ("get", "/api/v1/tokens/{token_id}"),
    "RevokeToken": ("post", "/api/v1/tokens/{token_id}/revoke"),
    "RotateToken": ("post", "/api/v1/tokens/{token_id}/rotate"),
    "GetTokenActivity": ("get", "/api/v1/tokens/{token_id}/activity"),
}
LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str]]] = {
    ("post", "/api/v1/tokens", "201"): _TOKEN_NEXT,
    ("post", "/api/v1/tokens/{token_id}/rotate", "201"): _TOKEN_NEXT,
    ("post", "/api/v1/roles", "201"): {
        "GetRole": ("get", "/api/v1/roles/{role_id}"),
        "UpdateRole": ("put", "/api/v1/roles/{role_id}"),
    },
    ("post", "/api/v1/users", "201"): {
        "SetUserRoles": ("put", "/api/v1/users/{user_id}/roles"),
        "DeactivateUser": ("post", "/api/v1/users/{user_id}/deactivate"),
    },
}


def add_links(schema: dict[str, Any]) -> None:
    """Write ``LINKS`` into an OpenAPI document (a link whose source or target is absent is left out)."""
    paths = schema.get("paths", {})
    for (method, path, status), links in LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        for name, (target_method, target_path) in links.items():
            target = paths.get(target_path, {}).get(target_method)
            params = [p["name"] for p in (target or {}).get("parameters", []) if p.get("in") == "path"]
            if target is None or len(params) != 1:
                continue
            response.setdefault("links", {})[name] = {
                "operationId": target["operationId"],
                "parameters": {params[0]: "$response.body#/id"},
                "description": f"`id` of the response is `{params[0]}` in {target_method.upper()} {target_path}.",
            }


def create_app(services: Services | None = None, *, start_background: bool = True) -> FastAPI:
    svc = services or Services.build(get_settings())
    if services is None:
        from kbai import logs

        logs.configure(svc.settings.log_level)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if start_background:
            svc.start()
        try:
            yield
        finally:
            svc.stop()

    app = FastAPI(
        title="kbai",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=openapi_doc.operation_id,
        root_path_in_servers=False,  # the servers entry is KBAI_PUBLIC_URL (below), not a request's guess
        # kbai's observability is its Prometheus metrics and JSON logs. FastAPI's native OpenTelemetry hooks,
        # on by default, look up the global OpenTelemetry providers (environment reads) on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = svc
    errors.install(app)
    app.include_router(api.router)
    app.include_router(gateway_routes.router)
    app.include_router(leak_routes.router)
    app.include_router(lifecycle_routes.router)
    app.include_router(credential_routes.router)
    app.include_router(provisioning_routes.router)
    app.include_router(operator_routes.router)
    app.include_router(scim_routes.router)
    app.include_router(pages.router)
    app.include_router(oidc.router)
    app.include_router(brand.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    docs.install(app)

    @app.get(
        "/livez",
        tags=["operations"],
        summary="Liveness: the process answers",
        responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
    )
    async def livez() -> JSONResponse:
        """Touches nothing (no database, no Redis), so a database blip never gets a healthy process restarted."""
        return JSONResponse({"status": "alive", "version": __version__})

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Readiness: database, migrations, invalidation bus",
        responses={
            200: {"content": {"application/json": {"schema": {"type": "object"}}}},
            503: {
                "description": "Not ready; `reasons` says why.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
        },
    )
    def readyz() -> JSONResponse:
        """Ready when the database answers, its schema is at this code's newest migration, and (with Redis)
        the Redis invalidation channel is subscribed. Without Redis the channel is the database's own
        (PostgreSQL LISTEN, the SQLite poller): its state is reported, and while it is down the cache is
        bypassed, so every answer stays exact; an in-memory database has none (`absent`)."""
        checks: dict[str, str] = {}
        reasons: list[str] = []
        try:
            current, head = svc.db.schema_revisions()
            checks["database"] = "ok"
            checks["migrations"] = "ok" if current == head else "not_at_head"
            if current != head:
                reasons.append(
                    f"the database schema is at revision {current or 'none'}, this code's newest is "
                    f"{head}: run `kbai db upgrade`"
                )
        except (SQLAlchemyError, OSError):
            checks["database"] = checks["migrations"] = "unreachable"
            reasons.append("the database cannot be reached")
        if isinstance(svc.bus, LocalBus):
            checks["invalidation_bus"] = "absent"
        elif svc.bus.healthy:
            checks["invalidation_bus"] = "connected"
        else:
            checks["invalidation_bus"] = "disconnected"
            if svc.settings.redis_url:
                reasons.append("the Redis invalidation channel (KBAI_REDIS_URL) is not subscribed")
        body = {"status": "not_ready" if reasons else "ready", "checks": checks, "reasons": reasons}
        return JSONResponse(body, status_code=503 if reasons else 200, headers={"Cache-Control": "no-store"})

    @app.get("/healthz", tags=["operations"], summary="Liveness and database check")
    def healthz() -> JSONResponse:
        try:
            svc.db.ping()
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            return JSONResponse({"status": "unhealthy", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok", "version": __version__})

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def metrics() -> Response:
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        add_links(schema)
        openapi_doc.refine(schema, app.routes)
        if svc.settings.path_prefix:  # served under a path: clients must put it in front of every operation
            schema["servers"] = [
                {
                    "url": svc.settings.public_url,
                    "description": "This kbai deployment (KBAI_PUBLIC_URL): every path below is under it.",
                }
            ]
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["serviceCredential"] = {
            "type": "http",
            "scheme": "basic",
            "description": "Client id and secret from `kbai service-credential create NAME [--allow introspect,"
            "tenants,tokens]`: introspection needs `introspect`, the operator API `tenants` or "
            "`tokens`.",
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the document
    app.add_middleware(KbaiMiddleware, services=svc)
    # Outermost (added last): /auth/check is answered before routing and the middleware above.
    app.add_middleware(ForwardAuth, services=svc)
    if svc.settings.path_prefix:
        # Outside /auth/check's front: it answers under the prefix (and only there) like every route.
        app.add_middleware(prefix.ServeUnder, prefix=svc.settings.path_prefix)
    # Added last, so it runs first (before /auth/check too): everything inside sees the client's real (and valid) address.
    app.add_middleware(ForwardedClient, trusted_proxies=svc.settings.trusted_proxies)
    return app
