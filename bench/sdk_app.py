"""Bench-only: a small Starlette service, unprotected or protected by ``kbai.sdk`` (local verifier).

``GET /contacts`` returns a fixed JSON list. With ``BENCH_SDK_PROTECTED=1`` the app is wrapped in
``KbaiAuthMiddleware`` with a ``LocalVerifier`` on ``KBAI_DATABASE_URL`` (read from the environment
as ``kbai serve`` reads it), so every request needs a good kbai token; without it, the same app
answers anyone. Same uvicorn options as ``kbai serve``. Run:
``BENCH_SDK_PROTECTED=1 KBAI_DATABASE_URL=sqlite:///... python bench/sdk_app.py --port 8002``.
"""

from __future__ import annotations

import argparse
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

CONTACTS = [{"id": 1, "name": "Grace Hopper"}, {"id": 2, "name": "Alan Turing"}]


async def contacts(_: Request) -> JSONResponse:
    return JSONResponse({"contacts": CONTACTS})


def build() -> Starlette:
    app = Starlette(routes=[Route("/contacts", contacts)])
    if os.environ.get("BENCH_SDK_PROTECTED") == "1":
        from kbai.sdk import KbaiAuthMiddleware, LocalVerifier

        app.add_middleware(KbaiAuthMiddleware, verifier=LocalVerifier())
    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    uvicorn.run(
        "sdk_app:build",
        factory=True,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
