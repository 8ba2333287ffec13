"""kbai.sdk in introspection mode needs none of the server's packages: a service that imports it with
every server-only module made unimportable still verifies real tokens against a real kbai."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kbai.services import Services
from tests.conftest import OPERATOR, LiveServer, build_world

# Everything kbai's server needs that the SDK (FastAPI/Starlette, Pydantic, httpx) does not, and
# kbai's own server-side packages: docs/sdk.md says which few packages the SDK needs instead.
SERVER_ONLY = (
    "sqlalchemy",
    "alembic",
    "psycopg",
    "psycopg_binary",
    "uvicorn",
    "redis",
    "limits",
    "argon2",
    "jinja2",
    "prometheus_client",
    "typer",
    "click",
    "cryptography",
    "python_multipart",
    "multipart",
    "pydantic_settings",
    "fastapi_offline",
    "kbai.services",
    "kbai.store",
    "kbai.config",
    "kbai.access",
    "kbai.cache",
    "kbai.tokens.service",
    "kbai.tokens.verify",
    "kbai.web.auth",
    "kbai.web.errors",
)

SERVICE = textwrap.dedent("""
    import json, sys

    BLOCKED = {blocked!r}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not installed with the SDK)")
            return None

    sys.meta_path.insert(0, Blocker())

    from typing import Annotated
    from fastapi import Depends, FastAPI
    from starlette.testclient import TestClient
    from kbai.sdk import Identity, IntrospectionVerifier, install, require_scopes

    url, client_id, secret, token = sys.argv[1:5]
    app = FastAPI()
    install(app, IntrospectionVerifier(url, client_id, secret), exempt_paths=("/healthz",))

    @app.get("/contacts")
    def contacts(who: Annotated[Identity, Depends(require_scopes("users.read"))]):
        return {{"email": who.email, "token_id": who.token_id}}

    @app.get("/roles")
    def roles(who: Annotated[Identity, Depends(require_scopes("roles.manage"))]):
        return {{}}

    with TestClient(app) as client:
        good = client.get("/contacts", headers={{"Authorization": "Bearer " + token}})
        missing = client.get("/contacts")
        short = client.get("/roles", headers={{"Authorization": "Bearer " + token}})
    print(json.dumps({{
        "good": [good.status_code, good.json()],
        "missing": [missing.status_code, missing.json()["error"]["code"], missing.headers.get("www-authenticate")],
        "short": [short.status_code, short.json()["error"]["code"]],
        "loaded": sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED)),
    }}))
""")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_introspection_sdk_runs_without_the_servers_packages(
    services: Services, live_server: LiveServer, tmp_path: Path
) -> None:
    world = build_world(services)
    _view, token = services.tokens.create(world.dev, "light sdk", ["users.read"])
    credential, secret = services.credentials.create(OPERATOR, "light-sdk")
    script = tmp_path / "light_service.py"
    script.write_text(SERVICE.format(blocked=SERVER_ONLY))
    done = subprocess.run(
        [sys.executable, str(script), live_server.url + "/api/v1/introspect", credential.client_id, secret, token],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:].replace(token, "<token>")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["good"][0] == 200 and result["good"][1]["email"] == "dev@acme.test"
    assert result["missing"] == [401, "not_authenticated", 'Bearer realm="kbai"']
    assert result["short"] == [403, "insufficient_scope"]
    assert result["loaded"] == []
