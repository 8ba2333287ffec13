"""Render every failure as ``{"error": {"code", "message"}}``, with RFC 6750 headers where they apply."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from kbai import errors
from kbai.errors import KbaiError
from kbai.tokenformat import redact
from kbai.web.answers import REALM, auth_headers, error_response

log = logging.getLogger("kbai.web")
__all__ = ["REALM", "auth_headers", "error_response", "install"]  # the first three live in kbai.web.answers


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "header")]
        where = ".".join(loc) or "body"
        msg = str(e.get("msg", "is invalid"))
        if e.get("type") == "extra_forbidden":
            msg = "is not a known field"
        elif e.get("type") == "missing":
            msg = "is required"
        elif e.get("type") == "json_invalid":
            where, msg = "body", "must be a JSON object"
        elif e.get("type") in ("model_attributes_type", "dict_type"):
            msg = "must be a JSON object"  # the body, or the field that should be one (e.g. rate_limit)
        parts.append(f"{where} {msg}")
    return redact("; ".join(parts) + ".")


def install(app: FastAPI) -> None:
    @app.exception_handler(KbaiError)
    async def _kbai(_: Request, exc: KbaiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"error": {"code": "validation_error", "message": _validation_message(exc)}}, status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request", 413: "too_large"}
        messages = {
            404: "No such endpoint. The API is described at /openapi.json.",
            405: "This endpoint does not accept that method.",
        }
        message = messages.get(exc.status_code) or str(exc.detail)
        return JSONResponse(
            {"error": {"code": codes.get(exc.status_code, "http_error"), "message": redact(message)}},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        # A value the database cannot hold (out of range, wrong encoding): the caller's input, not a crash.
        log.warning(
            "database refused a value on %s %s: %s", request.method, request.url.path, redact(str(exc.orig))[:200]
        )
        return JSONResponse(
            {"error": {"code": "validation_error", "message": "A value in the request is out of range or malformed."}},
            status_code=422,
        )

    @app.exception_handler(OperationalError)
    async def _database_down(request: Request, exc: OperationalError) -> JSONResponse | HTMLResponse:
        # The database is unreachable (or, on SQLite, stayed locked past the busy timeout): a 503 the
        # client may retry, not a crash. The pool reconnects by itself once the database is back.
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, redact(str(exc.orig))[:200])
        err = KbaiError(errors.DATABASE_UNAVAILABLE)
        headers = {"Retry-After": "5"}
        from kbai.web.pages import base as pages  # late: kbai.sdk uses this module and needs none of the pages

        if pages.is_page(request.url.path):
            return HTMLResponse(pages.standalone_error_page(err), status_code=err.status, headers=headers)
        return JSONResponse(
            {"error": {"code": err.code, "message": err.message}}, status_code=err.status, headers=headers
        )

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "unhandled %s on %s %s: %s", type(exc).__name__, request.method, request.url.path, redact(str(exc))[:500]
        )
        return JSONResponse(
            {"error": {"code": "internal_error", "message": "Something went wrong on our side; it has been logged."}},
            status_code=500,
        )
