"""Interactive API docs: Swagger UI at /docs and ReDoc at /redoc, served from the assets that the
``fastapi-offline`` package ships (no CDN, nothing vendored here), each under a CSP of its own."""

from __future__ import annotations

import html
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from kbai.web import prefix

ASSETS = "/docs/assets"  # fastapi-offline's Swagger UI and ReDoc bundles
OWN = "/static/docs"  # our two start-up scripts (no inline script, so the CSP needs no hash or nonce)

# Exactly what the two bundles need, found by loading both in Chromium with nothing allowed
# (tests/ui/test_api_docs_browser.py fails on any violation): their own scripts and styles from
# this origin, the OpenAPI document over fetch, data: images (Swagger UI's icons); ReDoc also
# injects <style> elements (styled-components) and runs its search in a worker made from a blob.
CSP = {
    "swagger": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "redoc": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; worker-src blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" type="image/png" href="{assets}/favicon.png">
{css}
</head>
<body data-openapi-url="{openapi}">
<div id="{root}"></div>
<script src="{assets}/{bundle}"></script>
<script src="{own}/{init}"></script>
</body>
</html>
"""


def assets_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def _page(kind: str, title: str, openapi_url: str) -> HTMLResponse:
    swagger = kind == "swagger"
    assets = prefix.url(ASSETS)  # under KBAI_PUBLIC_URL's path, like every address kbai hands out
    body = _PAGE.format(
        title=html.escape(title),
        assets=assets,
        own=prefix.url(OWN),
        openapi=html.escape(prefix.url(openapi_url)),
        css=f'<link rel="stylesheet" href="{assets}/swagger-ui.css">' if swagger else "",
        root="swagger-ui" if swagger else "redoc",
        bundle="swagger-ui-bundle.js" if swagger else "redoc.standalone.js",
        init="swagger-init.js" if swagger else "redoc-init.js",
    )
    return HTMLResponse(body, headers={"Content-Security-Policy": CSP[kind], "Cache-Control": "no-cache"})


def install(app: FastAPI) -> None:
    """Serve /docs, /redoc and the assets they load (the app is built with docs_url=None, redoc_url=None)."""
    router = APIRouter(include_in_schema=False)
    openapi_url = app.openapi_url or "/openapi.json"

    @router.get("/docs")
    def swagger_ui() -> HTMLResponse:
        return _page("swagger", f"{app.title} API: Swagger UI", openapi_url)

    @router.get("/redoc")
    def redoc() -> HTMLResponse:
        return _page("redoc", f"{app.title} API: ReDoc", openapi_url)

    app.include_router(router)
    app.mount(ASSETS, StaticFiles(directory=assets_dir()), name="docs-assets")
