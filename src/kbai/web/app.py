"""The FastAPI application factory used by ``kbai serve``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kbai import __version__
from kbai.config import get_settings
from kbai.gateway import routes as gateway_routes
from kbai.services import Services
from kbai.web import api, errors, pages
from kbai.web import leaks as leak_routes
from kbai.web import lifecycle as lifecycle_routes
from kbai.web.middleware import KbaiMiddleware

DESCRIPTION = """Developer API tokens: create scoped, expiring tokens, use them as
`Authorization: Bearer kbai_pk_...`, revoke them. Token management needs a session
(`POST /api/v1/session`); cookie-authenticated writes must send `X-CSRF-Token`.
Errors are `{"error": {"code", "message"}}`."""


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

    app = FastAPI(title="kbai", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.services = svc
    errors.install(app)
    app.include_router(api.router)
    app.include_router(gateway_routes.router)
    app.include_router(leak_routes.router)
    app.include_router(lifecycle_routes.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")

    @app.get("/healthz", tags=["operations"], summary="Liveness and database check")
    def healthz() -> JSONResponse:
        try:
            svc.db.ping()
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            return JSONResponse({"status": "unhealthy", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok", "version": __version__})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics",
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    def metrics() -> Response:
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict:  # type: ignore[type-arg]
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["serviceCredential"] = {
            "type": "http", "scheme": "basic",
            "description": "Client id and secret from `kbai service-credential create NAME`.",
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(KbaiMiddleware, services=svc)
    return app
