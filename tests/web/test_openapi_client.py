"""A TypeScript client generated from kbai's OpenAPI document (openapi-typescript) type-checks a real
call with tsc: the operation ids, bodies, answers and headers are usable as a client needs them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from kbai.app import create_app
from kbai.config import Settings
from kbai.services import Services
from tests.conftest import missing_service

TOOLS = Path(__file__).resolve().parent / "openapi_ts"
BIN = TOOLS / "node_modules" / ".bin"

CALL = """
import type { operations, paths } from "./kbai";

type CreateBody = operations["createToken"]["requestBody"]["content"]["application/json"];
type Created = operations["createToken"]["responses"][201]["content"]["application/json"];
type Problem = operations["createToken"]["responses"][409]["content"]["application/json"];
type Checked = operations["checkAuth"]["responses"][200]["headers"];

export async function createToken(base: string, csrf: string, body: CreateBody): Promise<Created | Problem> {
  const response = await fetch(`${base}/api/v1/tokens`, {
    method: "POST",
    headers: { "content-type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
    credentials: "include",
  });
  return (await response.json()) as Created | Problem;
}

export async function zapier(base: string, csrf: string): Promise<string> {
  const answer = await createToken(base, csrf, { name: "Zapier production", scopes: ["users.read"], expires_in_days: 90 });
  if ("error" in answer) {
    return answer.error.code + ": " + answer.error.message;
  }
  const secret: string = answer.token ?? "";  // null only on an Idempotency-Key replay
  const status: "active" | "paused" | "expired" | "revoked" = answer.status;
  // @ts-expect-error the token is a string, never a number
  const wrong: number = answer.token;
  return secret + status + answer.prefix + String(wrong);
}

// @ts-expect-error name is required
export const missingName: CreateBody = { scopes: [] };

export const rotatePath: keyof paths = "/api/v1/tokens/{token_id}/rotate";
export const userHeader: Checked["X-Kbai-User"] = "42";
"""


def test_a_generated_typescript_client_type_checks_a_call(tmp_path: Path) -> None:
    if not (BIN / "openapi-typescript").exists() or shutil.which("node") is None:
        missing_service("openapi-typescript (npm ci in tests/web/openapi_ts: ./scripts/setup.sh --test)")
    svc = Services.build(Settings(database_url=f"sqlite:///{tmp_path / 'kbai.db'}"))
    try:
        document = create_app(svc, start_background=False).openapi()
    finally:
        svc.close()
    (tmp_path / "openapi.json").write_text(json.dumps(document))
    done = subprocess.run(
        [str(BIN / "openapi-typescript"), str(tmp_path / "openapi.json"), "-o", str(tmp_path / "kbai.ts")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    generated = (tmp_path / "kbai.ts").read_text()
    assert "createToken: {" in generated and '"X-Kbai-Scopes"' in generated

    (tmp_path / "call.ts").write_text(CALL)
    tsc = [
        str(BIN / "tsc"),
        "--noEmit",
        "--strict",
        "--target",
        "es2022",
        "--module",
        "es2022",
        "--moduleResolution",
        "bundler",
        "--lib",
        "es2022,dom",
        str(tmp_path / "call.ts"),
    ]
    done = subprocess.run(tsc, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]

    # And the types are real: a call with a wrong body does not compile.
    (tmp_path / "call.ts").write_text(CALL + '\nexport const bad: CreateBody = { name: 1, scopes: "users.read" };\n')
    done = subprocess.run(tsc, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode != 0 and "call.ts" in done.stdout, done.stdout[-2000:]
