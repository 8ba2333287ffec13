"""A small contacts API whose routes are protected by kbai tokens through ``kbai.sdk``.

GET /contacts needs ``contacts.read``; POST /contacts needs ``contacts.write``. Contacts live in
memory, one list per kbai tenant. Configured from the environment:

* local mode (verify in-process against kbai's database): ``KBAI_DATABASE_URL`` and optionally
  ``KBAI_PERMISSIONS_FILE`` (default: ``permissions.toml`` next to this file);
* remote mode (RFC 7662 introspection): ``KBAI_INTROSPECT_URL``, ``KBAI_CLIENT_ID`` and
  ``KBAI_CLIENT_SECRET``, optionally ``KBAI_INTROSPECT_CACHE_SECONDS`` (default 0).

Run it with ``uvicorn examples.contacts_service:app --port 8001`` from the repository root, or
``python examples/contacts_service.py --port 8001``. See examples/README.md.
"""

from __future__ import annotations

import argparse
import os
import threading
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field

from kbai.sdk import Identity, IntrospectionVerifier, LocalVerifier, Verifier, install, require_scopes

HERE = Path(__file__).resolve().parent


def verifier_from_env(env: Mapping[str, str] = os.environ) -> Verifier:
    """Remote mode when KBAI_INTROSPECT_URL is set, else local mode with KBAI_DATABASE_URL."""
    if env.get("KBAI_INTROSPECT_URL"):
        missing = [name for name in ("KBAI_CLIENT_ID", "KBAI_CLIENT_SECRET") if not env.get(name)]
        if missing:
            raise SystemExit(
                f"contacts service: remote mode also needs {' and '.join(missing)} "
                "(from `kbai service-credential create NAME`)"
            )
        try:
            return IntrospectionVerifier(
                env["KBAI_INTROSPECT_URL"],
                env["KBAI_CLIENT_ID"],
                env["KBAI_CLIENT_SECRET"],
                cache_seconds=float(env.get("KBAI_INTROSPECT_CACHE_SECONDS") or 0),
            )
        except ValueError as exc:
            raise SystemExit(f"contacts service: {exc}") from None
    if env.get("KBAI_DATABASE_URL"):
        try:
            return LocalVerifier(
                env["KBAI_DATABASE_URL"],
                permissions_file=env.get("KBAI_PERMISSIONS_FILE") or HERE / "permissions.toml",
            )
        except ValueError as exc:  # a bad KBAI_* setting or permissions file
            raise SystemExit(f"contacts service: {exc}") from None
    raise SystemExit(
        "contacts service: set KBAI_DATABASE_URL (local mode), or KBAI_INTROSPECT_URL, "
        "KBAI_CLIENT_ID and KBAI_CLIENT_SECRET (remote mode)"
    )


class ContactIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    email: str = Field(min_length=3, max_length=254)


class Contact(ContactIn):
    id: int
    created_by: str
    created_at: datetime


class ContactList(BaseModel):
    contacts: list[Contact]


Reader = Annotated[Identity, Depends(require_scopes("contacts.read"))]
Writer = Annotated[Identity, Depends(require_scopes("contacts.write"))]


def create_app(verifier: Verifier | None = None) -> FastAPI:
    app = FastAPI(title="Contacts (kbai.sdk example)", version="1.0")
    install(app, verifier or verifier_from_env(), exempt_paths=("/healthz", "/docs", "/openapi.json"))
    contacts: dict[int, list[Contact]] = defaultdict(list)  # tenant id -> its contacts
    lock = threading.Lock()  # sync routes run in a thread pool

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/contacts")
    def list_contacts(who: Reader) -> ContactList:
        with lock:
            return ContactList(contacts=list(contacts[who.tenant_id]))

    @app.post("/contacts", status_code=201)
    def add_contact(body: ContactIn, who: Writer) -> Contact:
        with lock:
            mine = contacts[who.tenant_id]
            contact = Contact(id=len(mine) + 1, created_by=who.email, created_at=datetime.now(UTC), **body.model_dump())
            mine.append(contact)
        return contact

    return app


app = create_app()


if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser(description="The kbai.sdk example contacts service.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port)
