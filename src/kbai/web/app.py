"""The FastAPI application factory used by ``kbai serve``."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from kbai import __version__
from kbai.config import get_settings
from kbai.services import Services


def create_app(services: Services | None = None) -> FastAPI:
    svc = services or Services.build(get_settings())
    app = FastAPI(title="kbai", version=__version__)
    app.state.services = svc

    @app.get("/healthz", tags=["operations"])
    def healthz() -> JSONResponse:
        try:
            svc.db.ping()
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            return JSONResponse({"status": "unhealthy", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok", "version": __version__})

    return app
