"""Bench-only baselines: the same server stack as ``kbai serve`` with nothing of kbai in it.

uvicorn with exactly the options ``kbai serve`` passes to ``uvicorn.run`` (see ``kbai.cli.serve``),
one process, and one of two apps returning ``/auth/check``'s 200 body and Cache-Control header:
- ``--app starlette``: a bare Starlette JSON endpoint (``GET /bare-starlette``), the ceiling of a
  Python ASGI handler on this stack;
- ``--app fastapi`` (default): FastAPI with ``GET /bare`` (a sync route: it pays the thread-pool
  hop) and ``GET /bare-async`` (an async route, no hop).
Run: ``python bench/bare_app.py --app starlette --port 8001``. Never part of the product.
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse as StarletteJSONResponse
from starlette.routing import Route

app = FastAPI(title="bench-bare")


@app.get("/bare")
def bare() -> JSONResponse:
    return JSONResponse({"active": True}, headers={"Cache-Control": "no-store"})


@app.get("/bare-async")
async def bare_async() -> JSONResponse:
    return JSONResponse({"active": True}, headers={"Cache-Control": "no-store"})


async def bare_starlette(_: Request) -> StarletteJSONResponse:
    return StarletteJSONResponse({"active": True}, headers={"Cache-Control": "no-store"})


starlette_app = Starlette(routes=[Route("/bare-starlette", bare_starlette)])


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--app", choices=("fastapi", "starlette"), default="fastapi")
    args = parser.parse_args()
    target = "bare_app:starlette_app" if args.app == "starlette" else "bare_app:app"
    # The same options as kbai.cli.serve (which reads X-Forwarded-For in the app: kbai.web.proxy).
    uvicorn.run(target, host=args.host, port=args.port, log_level="warning", access_log=False, proxy_headers=False)


if __name__ == "__main__":
    main()
