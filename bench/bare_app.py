"""Bench-only baseline: the same server stack as ``kbai serve`` with nothing of kbai in it.

FastAPI + uvicorn with exactly the options ``kbai serve`` passes to ``uvicorn.run`` (see
``kbai.cli.serve``), one process. ``GET /bare`` is a sync route like ``/auth/check`` (so it pays the
same thread-pool hop) returning the same body; ``GET /bare-async`` is the same without the hop.
Run: ``python bench/bare_app.py --port 8001``. Never part of the product.
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI
from fastapi.responses import JSONResponse

app = FastAPI(title="bench-bare")


@app.get("/bare")
def bare() -> JSONResponse:
    return JSONResponse({"active": True}, headers={"Cache-Control": "no-store"})


@app.get("/bare-async")
async def bare_async() -> JSONResponse:
    return JSONResponse({"active": True}, headers={"Cache-Control": "no-store"})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    # The same options as kbai.cli.serve (trusted proxies at their default).
    uvicorn.run("bare_app:app", host=args.host, port=args.port, log_level="warning", access_log=False,
                proxy_headers=True, forwarded_allow_ips="127.0.0.1,::1")


if __name__ == "__main__":
    main()
