"""Hostile input (rule 12): every bad request gets the right 4xx with ``{"error": {"code", "message"}}``,
a clear message, and changes nothing.

One table of cases drives the JSON API and the HTML forms in-process (TestClient, both backends); a
form case expects an error page whose alert carries the error code and message (``page=True``). A
subset of the table, plus 64 KiB headers and 10 MB bodies, then goes over real HTTP to a live
``kbai serve`` where uvicorn's own limits apply. CLI cases run the real ``kbai`` console script. For every case the whole
database is snapshotted before and after: not one row may differ.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from kbai.app import create_app
from kbai.clock import FrozenClock
from kbai.config import Settings
from kbai.services import Services
from kbai.store.idempotency import Claim, IdempotencyStore
from kbai.web.idempotency import fingerprint
from tests.conftest import FAST_ARGON2, OPERATOR, build_world, start_server
from tests.web.safety import changed_tables, error_problems, page_problems, scim_problems, shown, shown_page, snapshot

MISSING = object()
# OIDC configured against a closed loopback port: the provider is "down", callbacks are judged without it.
UNREACHABLE_OIDC = {
    "oidc_issuer": "http://127.0.0.1:9",
    "oidc_client_id": "kbai",
    "oidc_client_secret": "hostile-input",
}
HIGH = 1_000_000  # failure rate limits out of the way: they have their own tests
Value = Any  # a value, or a function of the Env that makes it


@dataclass(repr=False)
class Env:
    """Two tenants and the clients that attack them. Ids and the one known token come from here."""

    svc: Services
    dev: httpx.Client
    admin: httpx.Client
    anon: httpx.Client
    csrf: dict[str, str]
    dev_token: str  # dev's own token (scopes: users.read); never printed
    ids: dict[str, int]
    basic: str  # HTTP Basic header value of a real service credential
    scim: dict[str, str] = field(default_factory=dict)  # provisioning credentials: acme, globex, revoked
    op_basic: str = ""  # HTTP Basic of a service credential allowed introspect, tenants and tokens

    def __repr__(self) -> str:  # pytest prints fixtures of a failing test: never the token or the secret
        return f"Env(ids={self.ids})"


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: Value
    status: int
    code: str
    who: str = "dev"  # dev | admin | anon | dev_token | service
    json: Value = MISSING
    content: Value = None
    content_type: str | None = None
    headers: Value = field(default_factory=dict)
    params: Value = None
    says: str = ""  # a phrase the message must contain
    csrf: bool = True  # send the session's X-CSRF-Token header (API cases; forms carry their own field)
    page: bool = False  # an HTML form: the answer is an error page (see safety.page_problems), not JSON
    scim: bool = False  # a SCIM request: the answer is RFC 7644's error schema; ``code`` is its scimType


def _v(value: Value, env: Env) -> Any:
    return value(env) if callable(value) else value


def _tok(body: dict[str, Any]) -> dict[str, Any]:
    return {"name": "hostile", "scopes": ["users.read"], **body}


def _twist(token: str, index: int, char: str) -> bytes:
    """The token with one char replaced by a look-alike, as the UTF-8 bytes a client would send."""
    return ("Bearer " + token[:index] + char + token[index + 1 :]).encode()


def _chunks(total: int, first: bytes = b'{"name": "') -> Callable[[Env], Iterator[bytes]]:
    """A body streamed without Content-Length (chunked), so only the running count can stop it."""

    def make(_: Env) -> Iterator[bytes]:
        yield first
        for _ in range(total // 65536):
            yield b"a" * 65536

    return make


FORM = "application/x-www-form-urlencoded"
KEYS = "/system-settings/api-keys"
LOGIN_CSRF = "hostile-login-csrf"  # the double-submit pair of the login form: this cookie and this field


def _form(who: str = "dev", csrf: str | None = "session", **fields: str | list[str]) -> Callable[[Env], bytes]:
    """A urlencoded form body; ``csrf="session"`` adds the field a page of ``who``'s session carries."""

    def make(e: Env) -> bytes:
        pairs = [(k, v) for k, vs in fields.items() for v in (vs if isinstance(vs, list) else [vs])]
        if csrf == "session":
            pairs.append(("csrf_token", e.csrf[who]))
        elif csrf is not None:
            pairs.append(("csrf_token", csrf))
        return urlencode(pairs).encode()

    return make


def _key(csrf: str | None = "session", **fields: str | list[str]) -> Callable[[Env], bytes]:
    """The API Keys create form, valid except for ``fields``."""
    return _form("dev", csrf, **{"name": "form", "scopes": "users.read", "expiry": "never", **fields})


def _multipart(**fields: str) -> bytes:
    parts = [f'--b\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    return ("".join(parts) + "--b--\r\n").encode()


def _page(
    id: str,
    path: Value,
    status: int,
    code: str,
    body: Value,
    who: str = "dev",
    says: str = "",
    content_type: str = FORM,
    headers: Value = None,
) -> Case:
    """A POST to an HTML form; the CSRF token travels in the body (``_form``), never in a header."""
    return Case(
        id,
        "POST",
        path,
        status,
        code,
        who,
        content=body,
        content_type=content_type,
        headers=headers or {},
        says=says,
        csrf=False,
        page=True,
    )


def _login_page(
    id: str,
    status: int,
    code: str,
    says: str = "",
    csrf: str | None = LOGIN_CSRF,
    content_type: str = FORM,
    body: Value = None,
    **fields: str,
) -> Case:
    """The login form with a matching login-CSRF cookie and field (unless ``csrf`` says otherwise)."""
    fields = {"email": "dev@acme.test", "password": "dev-password-1", "next": "/system-settings", **fields}
    return _page(
        id,
        "/login",
        status,
        code,
        body if body is not None else _form("anon", csrf, **fields),
        "anon",
        says,
        content_type,
        {"Cookie": f"kbai_login_csrf={LOGIN_CSRF}"},
    )


def _oidc(
    id: str, status: int, code: str, params: Any, who: str = "anon", path: str = "/oidc/callback", headers: Value = None
) -> Case:
    """A browser arriving at an OIDC route; the answer is an error page."""
    return Case(id, "GET", path, status, code, who, params=params, headers=headers or {}, csrf=False, page=True)


TOKENS = "/api/v1/tokens"
ME = "/api/v1/me"
CREDS = "/api/v1/service-credentials"


def _client_id(env: Env) -> str:
    """The client id of the env's real service credential (from its HTTP Basic header)."""
    return base64.b64decode(env.basic.split()[1]).decode().split(":")[0]


DEEP_ARRAYS = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECTS = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
UNKNOWN_TOKEN = "kbai_pk_" + "0" * 64
IDEM = "Idempotency-Key"
USED_KEY = "hostile-used-key"  # dev already created a token with it (another body)
RUNNING_KEY = "hostile-running-key"  # a request with it is still running (a claim without an answer)
RUNNING_BODY = {"name": "running", "scopes": ["users.read"]}

CASES: list[Case] = [
    # ---- Authorization: malformed, truncated, upper-case, padded, look-alike, oversized ------------
    Case(
        "auth-malformed",
        "GET",
        ME,
        401,
        "invalid_token",
        "anon",
        headers={"Authorization": "Bearer not-a-token"},
        says="malformed",
    ),
    Case(
        "auth-truncated",
        "GET",
        ME,
        401,
        "invalid_token",
        "anon",
        headers=lambda e: {"Authorization": "Bearer " + e.dev_token[:-1]},
        says="malformed",
    ),
    Case(
        "auth-prefix-only",
        "GET",
        ME,
        401,
        "invalid_token",
        "anon",
        headers={"Authorization": "Bearer kbai_pk_"},
        says="malformed",
    ),
    Case(
        "auth-upper-case",
        "GET",
        ME,
        401,
        "invalid_token",
        "anon",
        headers=lambda e: {"Authorization": "Bearer " + e.dev_token.upper()},
        says="malformed",
    ),
    Case(
        "auth-upper-case-secret",
        "GET",
        ME,
        401,
        "invalid_token",
        "anon",
        headers=lambda e: {"Authorization": "Bearer " + e.dev_token[:8] + e.dev_token[8:].upper()},
        says="malformed",
    ),
    Case(
        "auth-padded-equals",
        "GET",
        ME,
        401,
        "invalid_token",
        "anon",
        headers=lambda e: {"Authorization": "Bearer " + e.dev_token + "=="},
        says="malformed",
    ),
    Case(
        "auth-padded-junk",
        "GET",
        ME,
        401,
        "invalid_token",
        "anon",
        headers=lambda e: {"Authorization": "Bearer " + e.dev_token + " x"},
        says="malformed",
    ),
    Case(
        "auth-zero-width-prefix",
        "GET",
        ME,
        401,
        "invalid_token",
        "anon",
        headers=lambda e: {"Authorization": ("Bearer \u200b" + e.dev_token).encode()},
        says="malformed",
    ),
    Case(
        "auth-cyrillic-a",
        "GET",
        ME,
        401,
        "invalid_token",
        "anon",
        headers=lambda e: {"Authorization": _twist(e.dev_token, 2, "\u0430")},
        says="malformed",
    ),
    Case(
        "auth-fullwidth-digit",
        "GET",
        ME,
        401,
        "invalid_token",
        "anon",
        headers=lambda e: {"Authorization": _twist(e.dev_token, 10, "\uff10")},
        says="malformed",
    ),
    Case(
        "auth-fullwidth-prefix",
        "GET",
        ME,
        401,
        "invalid_token",
        "anon",
        headers=lambda e: {"Authorization": ("Bearer \uff4b\uff42\uff41\uff49" + e.dev_token[4:]).encode()},
        says="malformed",
    ),
    Case(
        "auth-oversized",
        "GET",
        ME,
        401,
        "invalid_token",
        "anon",
        headers={"Authorization": "Bearer " + "a" * 10_000},
        says="malformed",
    ),
    Case(
        "auth-doubled",
        "GET",
        ME,
        401,
        "invalid_token",
        "anon",
        headers=lambda e: {"Authorization": "Bearer " + e.dev_token * 2},
        says="malformed",
    ),
    Case(
        "auth-64k",
        "GET",
        ME,
        401,
        "invalid_token",
        "anon",
        headers={"Authorization": "Bearer kbai_pk_" + "0" * 65_536},
        says="malformed",
    ),
    Case(
        "auth-unknown",
        "GET",
        ME,
        401,
        "invalid_token",
        "anon",
        headers={"Authorization": "Bearer " + UNKNOWN_TOKEN},
        says="not recognised",
    ),
    Case(
        "auth-basic-scheme",
        "GET",
        ME,
        401,
        "invalid_token",
        "anon",
        headers={"Authorization": "Basic Zm9vOmJhcg=="},
        says="Bearer scheme",
    ),
    Case(
        "auth-empty-bearer",
        "GET",
        ME,
        401,
        "invalid_token",
        "anon",
        headers={"Authorization": "Bearer"},
        says="malformed",
    ),
    Case(
        "auth-token-in-query",
        "GET",
        ME,
        401,
        "not_authenticated",
        "anon",
        params=lambda e: {"access_token": e.dev_token},
    ),
    Case(
        "auth-check-upper-case",
        "GET",
        "/auth/check",
        401,
        "invalid_token",
        "anon",
        headers=lambda e: {"Authorization": "Bearer " + e.dev_token.upper()},
    ),
    Case(
        "auth-64k-cookie",
        "GET",
        ME,
        401,
        "not_authenticated",
        "anon",
        headers={"Cookie": "kbai_session=" + "a" * 65_536},
    ),
    Case("auth-64k-csrf", "POST", TOKENS, 403, "csrf_failed", json=_tok({}), headers={"X-CSRF-Token": "a" * 65_536}),
    Case("auth-no-csrf", "POST", TOKENS, 403, "csrf_failed", json=_tok({}), csrf=False),
    Case(
        "auth-non-ascii-csrf",
        "POST",
        TOKENS,
        403,
        "csrf_failed",
        json=_tok({}),
        csrf=False,
        headers={"X-CSRF-Token": "caf\u00e9-\u00ff".encode()},
    ),
    Case("auth-anon-list", "GET", TOKENS, 401, "not_authenticated", "anon"),
    Case("auth-anon-create", "POST", TOKENS, 401, "not_authenticated", "anon", json=_tok({})),
    # ---- names -----------------------------------------------------------------------------------
    Case("name-bell", "POST", TOKENS, 422, "validation_error", json=_tok({"name": "a\x07b"}), says="U+0007"),
    Case("name-nul", "POST", TOKENS, 422, "validation_error", json=_tok({"name": "a\x00b"}), says="U+0000"),
    Case(
        "name-newline",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"name": "line1\nline2"}),
        says="control character",
    ),
    Case(
        "name-escape-sequence",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"name": "\x1b[31mred"}),
        says="U+001B",
    ),
    Case("name-rtl-mark", "POST", TOKENS, 422, "validation_error", json=_tok({"name": "\u200fabc"}), says="U+200F"),
    Case(
        "name-rtl-override",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"name": "invoice\u202etxt.exe"}),
        says="U+202E",
    ),
    Case(
        "name-zero-width", "POST", TOKENS, 422, "validation_error", json=_tok({"name": "Za\u200bpier"}), says="U+200B"
    ),
    Case("name-bom", "POST", TOKENS, 422, "validation_error", json=_tok({"name": "\ufeffZapier"}), says="U+FEFF"),
    Case(
        "name-101-chars", "POST", TOKENS, 422, "validation_error", json=_tok({"name": "x" * 101}), says="101 characters"
    ),
    Case("name-1001-chars", "POST", TOKENS, 422, "validation_error", json=_tok({"name": "x" * 1001}), says="name"),
    Case(
        "name-only-spaces",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"name": "     "}),
        says="must not be empty",
    ),
    Case("name-empty", "POST", TOKENS, 422, "validation_error", json=_tok({"name": ""}), says="must not be empty"),
    Case(
        "name-ideographic-spaces",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"name": "\u3000\u00a0\u3000"}),
        says="must not be empty",
    ),
    Case("name-number", "POST", TOKENS, 422, "validation_error", json=_tok({"name": 123}), says="name"),
    Case("name-null", "POST", TOKENS, 422, "validation_error", json=_tok({"name": None}), says="name"),
    Case("name-list", "POST", TOKENS, 422, "validation_error", json=_tok({"name": ["a"]}), says="name"),
    Case(
        "name-holds-a-token",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"name": "ci " + UNKNOWN_TOKEN}),
        says="must not contain a token",
    ),
    Case("name-taken-other-case", "POST", TOKENS, 409, "name_taken", json=_tok({"name": "EXISTING"})),
    # ---- scopes ----------------------------------------------------------------------------------
    Case("scope-unknown", "POST", TOKENS, 422, "unknown_scope", json=_tok({"scopes": ["nope.nope"]}), says="nope.nope"),
    Case(
        "scope-unheld",
        "POST",
        TOKENS,
        422,
        "unheld_scope",
        json=_tok({"scopes": ["users.manage"]}),
        says="users.manage",
    ),
    Case(
        "scope-duplicated",
        "POST",
        TOKENS,
        422,
        "duplicate_scope",
        json=_tok({"scopes": ["users.read", "users.read"]}),
        says="users.read",
    ),
    Case(
        "scope-upper-case",
        "POST",
        TOKENS,
        422,
        "unknown_scope",
        json=_tok({"scopes": ["USERS.READ"]}),
        says="USERS.READ",
    ),
    Case("scope-padded", "POST", TOKENS, 422, "unknown_scope", json=_tok({"scopes": ["users.read "]})),
    Case("scope-sql", "POST", TOKENS, 422, "unknown_scope", json=_tok({"scopes": ["users.read' OR '1'='1"]})),
    Case("scope-html", "POST", TOKENS, 422, "unknown_scope", json=_tok({"scopes": ["<script>alert(1)</script>"]})),
    Case("scope-json", "POST", TOKENS, 422, "unknown_scope", json=_tok({"scopes": ['{"$gt": ""}']})),
    Case("scope-huge", "POST", TOKENS, 422, "unknown_scope", json=_tok({"scopes": ["x" * 5000]})),
    Case("scopes-string", "POST", TOKENS, 422, "validation_error", json=_tok({"scopes": "users.read"}), says="scopes"),
    Case("scopes-null", "POST", TOKENS, 422, "validation_error", json=_tok({"scopes": None}), says="scopes"),
    Case(
        "scopes-object",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"scopes": {"users.read": True}}),
        says="scopes",
    ),
    Case("scopes-ints", "POST", TOKENS, 422, "validation_error", json=_tok({"scopes": [1]}), says="scopes"),
    Case("scopes-missing", "POST", TOKENS, 422, "validation_error", json={"name": "x"}, says="scopes is required"),
    Case(
        "scopes-too-many",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"scopes": ["users.read"] * 201}),
        says="scopes",
    ),
    # ---- expiry ----------------------------------------------------------------------------------
    Case(
        "exp-days-negative",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"expires_in_days": -1}),
        says="between 1 and 3650",
    ),
    Case(
        "exp-days-zero",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"expires_in_days": 0}),
        says="between 1 and 3650",
    ),
    Case(
        "exp-days-3651",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"expires_in_days": 3651}),
        says="between 1 and 3650",
    ),
    Case(
        "exp-days-huge",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"expires_in_days": 99999999999999999999}),
        says="expires_in_days",
    ),
    Case(
        "exp-days-float",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"expires_in_days": 1.5}),
        says="expires_in_days",
    ),
    Case(
        "exp-days-string",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"expires_in_days": "90"}),
        says="expires_in_days",
    ),
    Case(
        "exp-days-bool",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"expires_in_days": True}),
        says="expires_in_days",
    ),
    Case(
        "exp-at-past",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"expires_at": "2020-01-01"}),
        says="in the past",
    ),
    Case(
        "exp-at-this-second",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"expires_at": "2026-01-01T12:00:00Z"}),
        says="in the past",
    ),
    Case(
        "exp-at-too-far",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"expires_at": "9999-12-31"}),
        says="3650 days",
    ),
    Case(
        "exp-at-past-the-last-utc-second",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"expires_at": "9999-12-31T23:59:59-01:00"}),
        says="expires_at",
    ),
    Case(
        "exp-at-before-the-first-utc-second",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"expires_at": "0001-01-01T00:00:00+01:00"}),
        says="expires_at",
    ),
    Case(
        "exp-at-no-zone",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"expires_at": "2027-01-01T00:00:00"}),
        says="with a zone",
    ),
    Case(
        "exp-at-words",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"expires_at": "tomorrow"}),
        says="expires_at",
    ),
    Case(
        "exp-at-february-30",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"expires_at": "2027-02-30"}),
        says="expires_at",
    ),
    Case(
        "exp-at-int", "POST", TOKENS, 422, "validation_error", json=_tok({"expires_at": 1893456000}), says="expires_at"
    ),
    Case("exp-at-bool", "POST", TOKENS, 422, "validation_error", json=_tok({"expires_at": True}), says="expires_at"),
    Case(
        "exp-at-41-chars",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"expires_at": "2027-01-01" + " " * 31}),
        says="expires_at",
    ),
    Case(
        "exp-both",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"expires_in_days": 30, "expires_at": "2027-01-01"}),
        says="not both",
    ),
    # ---- bodies and content types ----------------------------------------------------------------
    Case(
        "body-text-plain",
        "POST",
        TOKENS,
        422,
        "validation_error",
        content=b'{"name": "x", "scopes": []}',
        content_type="text/plain",
        says="JSON object",
    ),
    Case(
        "body-form-on-json",
        "POST",
        TOKENS,
        422,
        "validation_error",
        content=b"name=x&scopes=users.read",
        content_type="application/x-www-form-urlencoded",
        says="JSON object",
    ),
    Case(
        "body-multipart",
        "POST",
        TOKENS,
        422,
        "validation_error",
        content=b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--b--\r\n',
        content_type="multipart/form-data; boundary=b",
        says="JSON object",
    ),
    Case(
        "body-invalid-json",
        "POST",
        TOKENS,
        422,
        "validation_error",
        content=b"{not json",
        content_type="application/json",
        says="JSON object",
    ),
    Case(
        "body-truncated-json",
        "POST",
        TOKENS,
        422,
        "validation_error",
        content=b'{"name": "x", "scopes": [',
        content_type="application/json",
        says="JSON object",
    ),
    Case("body-array", "POST", TOKENS, 422, "validation_error", json=[{"name": "x", "scopes": []}], says="JSON object"),
    Case("body-null", "POST", TOKENS, 422, "validation_error", content=b"null", content_type="application/json"),
    Case("body-string", "POST", TOKENS, 422, "validation_error", json="hello", says="JSON object"),
    Case("body-number", "POST", TOKENS, 422, "validation_error", json=42, says="JSON object"),
    Case(
        "body-empty",
        "POST",
        TOKENS,
        422,
        "validation_error",
        content=b"",
        content_type="application/json",
        says="required",
    ),
    Case("body-deep-arrays", "POST", TOKENS, 400, "bad_request", content=DEEP_ARRAYS, content_type="application/json"),
    Case(
        "body-deep-objects", "POST", TOKENS, 400, "bad_request", content=DEEP_OBJECTS, content_type="application/json"
    ),
    Case(
        "body-not-utf8",
        "POST",
        TOKENS,
        400,
        "bad_request",
        content=b'{"name": "\xc3\x28"}',
        content_type="application/json",
    ),
    Case(
        "body-extra-field",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"owner_id": 1}),
        says="not a known field",
    ),
    Case(
        "body-10mb",
        "POST",
        TOKENS,
        413,
        "too_large",
        content=b'{"name": "' + b"a" * 10_000_000 + b'"}',
        content_type="application/json",
    ),
    Case(
        "body-2mb-chunked",
        "POST",
        TOKENS,
        413,
        "too_large",
        content=_chunks(2_000_000),
        content_type="application/json",
    ),
    # ---- path ids --------------------------------------------------------------------------------
    Case("id-text", "GET", f"{TOKENS}/abc", 422, "validation_error", says="token_id"),
    Case("id-negative", "GET", f"{TOKENS}/-1", 422, "validation_error", says="token_id"),
    Case("id-zero", "POST", f"{TOKENS}/0/revoke", 422, "validation_error", says="token_id"),
    Case("id-huge", "POST", f"{TOKENS}/99999999999999999999/revoke", 422, "validation_error", says="token_id"),
    Case("id-float", "POST", f"{TOKENS}/1.5/revoke", 422, "validation_error", says="token_id"),
    Case("id-sql", "POST", f"{TOKENS}/1%20OR%201=1/revoke", 422, "validation_error", says="token_id"),
    Case("id-traversal", "POST", f"{TOKENS}/..%2F..%2Fusers/revoke", 404, "not_found"),
    Case("id-absent", "GET", f"{TOKENS}/2147483647", 404, "not_found", says="Token not found"),
    Case("id-other-tenant-token", "GET", lambda e: f"{TOKENS}/{e.ids['other_token']}", 404, "not_found"),
    Case("id-other-tenant-revoke", "POST", lambda e: f"{TOKENS}/{e.ids['other_token']}/revoke", 404, "not_found"),
    Case(
        "id-other-tenant-rotate", "POST", lambda e: f"{TOKENS}/{e.ids['other_token']}/rotate", 404, "not_found", json={}
    ),
    Case("id-sibling-revoke", "POST", lambda e: f"{TOKENS}/{e.ids['sibling_token']}/revoke", 404, "not_found"),
    Case("id-role-huge", "GET", "/api/v1/roles/99999999999999999999", 422, "validation_error", "admin", says="role_id"),
    Case("id-role-other-tenant", "GET", lambda e: f"/api/v1/roles/{e.ids['other_role']}", 404, "not_found", "admin"),
    Case(
        "id-role-put-other-tenant",
        "PUT",
        lambda e: f"/api/v1/roles/{e.ids['other_role']}",
        404,
        "not_found",
        "admin",
        json={"permissions": []},
    ),
    Case("id-user-negative", "POST", "/api/v1/users/-5/deactivate", 422, "validation_error", "admin", says="user_id"),
    Case(
        "id-user-other-tenant",
        "POST",
        lambda e: f"/api/v1/users/{e.ids['other_user']}/deactivate",
        404,
        "not_found",
        "admin",
    ),
    Case(
        "id-user-roles-other-tenant",
        "PUT",
        lambda e: f"/api/v1/users/{e.ids['other_user']}/roles",
        404,
        "not_found",
        "admin",
        json={"roles": ["Member"]},
    ),
    Case(
        "id-user-reactivate-negative",
        "POST",
        "/api/v1/users/-5/reactivate",
        422,
        "validation_error",
        "admin",
        says="user_id",
    ),
    Case(
        "id-user-reactivate-huge",
        "POST",
        "/api/v1/users/99999999999999999999/reactivate",
        422,
        "validation_error",
        "admin",
        says="user_id",
    ),
    Case(
        "id-user-reactivate-other-tenant",
        "POST",
        lambda e: f"/api/v1/users/{e.ids['other_user']}/reactivate",
        404,
        "not_found",
        "admin",
    ),
    # ---- query parameters ------------------------------------------------------------------------
    Case("q-limit-zero", "GET", TOKENS, 422, "validation_error", params={"limit": "0"}, says="limit"),
    Case("q-limit-text", "GET", TOKENS, 422, "validation_error", params={"limit": "ten"}, says="limit"),
    Case(
        "q-limit-huge", "GET", TOKENS, 422, "validation_error", params={"limit": "99999999999999999999"}, says="limit"
    ),
    Case("q-cursor-text", "GET", TOKENS, 422, "validation_error", params={"cursor": "abc"}, says="cursor"),
    Case("q-cursor-sql", "GET", TOKENS, 422, "validation_error", params={"cursor": "1 OR 1=1"}, says="cursor"),
    Case("q-cursor-negative", "GET", TOKENS, 422, "validation_error", params={"cursor": "-1"}, says="cursor"),
    Case("q-cursor-arabic-digit", "GET", TOKENS, 422, "validation_error", params={"cursor": "\u0661"}, says="cursor"),
    Case(
        "q-cursor-huge",
        "GET",
        TOKENS,
        422,
        "validation_error",
        params={"cursor": "99999999999999999999"},
        says="cursor",
    ),
    Case(
        "q-audit-since-words",
        "GET",
        "/api/v1/audit",
        422,
        "validation_error",
        "admin",
        params={"since": "yesterday"},
        says="since",
    ),
    Case(
        "q-audit-since-before-utc",
        "GET",
        "/api/v1/audit",
        422,
        "validation_error",
        "admin",
        params={"since": "0001-01-01T00:00:00+01:00"},
        says="since",
    ),
    Case(
        "q-audit-until-after-utc",
        "GET",
        "/api/v1/audit",
        422,
        "validation_error",
        "admin",
        params={"until": "9999-12-31T23:59:59-01:00"},
        says="until",
    ),
    Case(
        "q-audit-export-until-after-utc",
        "GET",
        "/api/v1/audit/export",
        422,
        "validation_error",
        "admin",
        params={"until": "9999-12-31T23:59:59-01:00"},
        says="until",
    ),
    Case(
        "q-audit-actor-huge",
        "GET",
        "/api/v1/audit",
        422,
        "validation_error",
        "admin",
        params={"actor_user_id": "99999999999999999999"},
        says="actor_user_id",
    ),
    Case(
        "q-audit-actor-negative",
        "GET",
        "/api/v1/audit",
        422,
        "validation_error",
        "admin",
        params={"actor_user_id": "-1"},
        says="actor_user_id",
    ),
    Case(
        "q-audit-actor-sql",
        "GET",
        "/api/v1/audit",
        422,
        "validation_error",
        "admin",
        params={"actor_user_id": "1 OR 1=1"},
        says="actor_user_id",
    ),
    Case(
        "q-audit-limit-201",
        "GET",
        "/api/v1/audit",
        422,
        "validation_error",
        "admin",
        params={"limit": "201"},
        says="limit",
    ),
    Case(
        "q-audit-action-51-chars",
        "GET",
        "/api/v1/audit",
        422,
        "validation_error",
        "admin",
        params={"action": "x" * 51},
        says="action",
    ),
    Case(
        "q-audit-cursor-sql",
        "GET",
        "/api/v1/audit",
        422,
        "validation_error",
        "admin",
        params={"cursor": "0; DROP TABLE audit_events"},
        says="cursor",
    ),
    Case(
        "q-audit-export-format",
        "GET",
        "/api/v1/audit/export",
        422,
        "validation_error",
        "admin",
        params={"format": "xml"},
        says="format",
    ),
    Case(
        "q-auth-check-51-scopes",
        "GET",
        "/auth/check",
        422,
        "validation_error",
        "dev_token",
        params=[("scope", f"s{i}") for i in range(51)],
    ),
    Case(
        "q-auth-check-long-scope",
        "GET",
        "/auth/check",
        422,
        "validation_error",
        "dev_token",
        params={"scope": "x" * 101},
    ),
    # ---- roles -----------------------------------------------------------------------------------
    Case(
        "role-name-empty",
        "POST",
        "/api/v1/roles",
        422,
        "validation_error",
        "admin",
        json={"name": ""},
        says="role name",
    ),
    Case(
        "role-name-control",
        "POST",
        "/api/v1/roles",
        422,
        "validation_error",
        "admin",
        json={"name": "Ops\x1b[31m"},
        says="U+001B",
    ),
    Case(
        "role-name-zero-width",
        "POST",
        "/api/v1/roles",
        422,
        "validation_error",
        "admin",
        json={"name": "Ad\u200bmin"},
        says="U+200B",
    ),
    Case(
        "role-name-101",
        "POST",
        "/api/v1/roles",
        422,
        "validation_error",
        "admin",
        json={"name": "r" * 101},
        says="101 characters",
    ),
    Case("role-name-taken", "POST", "/api/v1/roles", 409, "already_exists", "admin", json={"name": "Admin"}),
    Case("role-name-number", "POST", "/api/v1/roles", 422, "validation_error", "admin", json={"name": 7}, says="name"),
    Case(
        "role-perms-string",
        "POST",
        "/api/v1/roles",
        422,
        "validation_error",
        "admin",
        json={"name": "Ops", "permissions": "users.read"},
        says="permissions",
    ),
    Case(
        "role-perms-unknown",
        "POST",
        "/api/v1/roles",
        422,
        "unknown_permission",
        "admin",
        json={"name": "Ops", "permissions": ["nope.nope"]},
        says="nope.nope",
    ),
    Case(
        "role-perms-sql",
        "POST",
        "/api/v1/roles",
        422,
        "unknown_permission",
        "admin",
        json={"name": "Ops", "permissions": ["roles.read'; DROP TABLE roles;--"]},
    ),
    Case(
        "role-perms-ints",
        "POST",
        "/api/v1/roles",
        422,
        "validation_error",
        "admin",
        json={"name": "Ops", "permissions": [1]},
        says="permissions",
    ),
    Case(
        "role-rename-admin",
        "PUT",
        lambda e: f"/api/v1/roles/{e.ids['admin_role']}",
        422,
        "builtin_role",
        "admin",
        json={"name": "Owners"},
    ),
    Case(
        "role-strip-admin",
        "PUT",
        lambda e: f"/api/v1/roles/{e.ids['admin_role']}",
        422,
        "builtin_role",
        "admin",
        json={"permissions": []},
    ),
    Case(
        "role-put-unknown-perm",
        "PUT",
        lambda e: f"/api/v1/roles/{e.ids['dev_role']}",
        422,
        "unknown_permission",
        "admin",
        json={"permissions": ["users.read", "x.y"]},
    ),
    Case(
        "role-put-null-body",
        "PUT",
        lambda e: f"/api/v1/roles/{e.ids['dev_role']}",
        422,
        "validation_error",
        "admin",
        content=b"null",
        content_type="application/json",
    ),
    Case(
        "role-put-rename-taken",
        "PUT",
        lambda e: f"/api/v1/roles/{e.ids['dev_role']}",
        409,
        "already_exists",
        "admin",
        json={"name": "Member"},
    ),
    # ---- users -----------------------------------------------------------------------------------
    Case(
        "user-email-invalid",
        "POST",
        "/api/v1/users",
        422,
        "validation_error",
        "admin",
        json={"email": "not-an-email"},
        says="email",
    ),
    Case(
        "user-email-sql",
        "POST",
        "/api/v1/users",
        422,
        "validation_error",
        "admin",
        json={"email": "' OR 1=1 --@acme.test"},
        says="email",
    ),
    Case(
        "user-email-html",
        "POST",
        "/api/v1/users",
        422,
        "validation_error",
        "admin",
        json={"email": "<script>alert(1)</script>@acme.test"},
        says="email",
    ),
    Case(
        "user-email-non-ascii",
        "POST",
        "/api/v1/users",
        422,
        "validation_error",
        "admin",
        json={"email": "d\u0435v@acme.test"},
        says="email",
    ),
    Case(
        "user-email-fullwidth-at",
        "POST",
        "/api/v1/users",
        422,
        "validation_error",
        "admin",
        json={"email": "dev\uff20acme.test"},
        says="email",
    ),
    Case("user-email-taken", "POST", "/api/v1/users", 409, "already_exists", "admin", json={"email": "DEV@acme.test"}),
    Case(
        "user-email-321-chars",
        "POST",
        "/api/v1/users",
        422,
        "validation_error",
        "admin",
        json={"email": "a" * 310 + "@acme.test"},
        says="email",
    ),
    Case(
        "user-password-short",
        "POST",
        "/api/v1/users",
        422,
        "validation_error",
        "admin",
        json={"email": "new@acme.test", "password": "short"},
        says="password",
    ),
    Case(
        "user-role-unknown",
        "POST",
        "/api/v1/users",
        422,
        "validation_error",
        "admin",
        json={"email": "new@acme.test", "roles": ["Nope"]},
        says="Unknown role",
    ),
    Case(
        "user-role-sql",
        "POST",
        "/api/v1/users",
        422,
        "validation_error",
        "admin",
        json={"email": "new@acme.test", "roles": ["Admin' OR '1'='1"]},
        says="Unknown role",
    ),
    Case(
        "user-role-other-tenant",
        "POST",
        "/api/v1/users",
        422,
        "validation_error",
        "admin",
        json=lambda e: {"email": "new@acme.test", "roles": [e.ids["other_role"]]},
        says="Unknown role",
    ),
    Case(
        "user-role-bool",
        "POST",
        "/api/v1/users",
        422,
        "validation_error",
        "admin",
        json={"email": "new@acme.test", "roles": [True]},
        says="roles",
    ),
    Case(
        "user-role-float",
        "POST",
        "/api/v1/users",
        422,
        "validation_error",
        "admin",
        json={"email": "new@acme.test", "roles": [1.0]},
        says="roles",
    ),
    Case(
        "user-role-huge-id",
        "POST",
        "/api/v1/users",
        422,
        "validation_error",
        "admin",
        json={"email": "new@acme.test", "roles": [99999999999999999999]},
        says="Unknown role",
    ),
    Case(
        "user-role-negative-id",
        "PUT",
        lambda e: f"/api/v1/users/{e.ids['dev_user']}/roles",
        422,
        "validation_error",
        "admin",
        json={"roles": [-1]},
        says="Unknown role",
    ),
    Case(
        "user-roles-not-a-list",
        "PUT",
        lambda e: f"/api/v1/users/{e.ids['dev_user']}/roles",
        422,
        "validation_error",
        "admin",
        json={"roles": "Admin"},
        says="roles",
    ),
    Case(
        "user-deactivate-last-admin",
        "POST",
        lambda e: f"/api/v1/users/{e.ids['admin_user']}/deactivate",
        409,
        "last_admin",
        "admin",
    ),
    Case(
        "user-demote-last-admin",
        "PUT",
        lambda e: f"/api/v1/users/{e.ids['admin_user']}/roles",
        409,
        "last_admin",
        "admin",
        json={"roles": ["Member"]},
    ),
    # ---- tenant policy: webhook URLs that point inside (issue 13, finding 2) ------------------------
    Case(
        "policy-webhook-metadata-ip",
        "PUT",
        "/api/v1/policies",
        422,
        "webhook_url_refused",
        "admin",
        json={"webhook_url": "http://169.254.169.254/latest/meta-data/"},
        says="link-local",
    ),
    Case(
        "policy-webhook-metadata-name",
        "PUT",
        "/api/v1/policies",
        422,
        "webhook_url_refused",
        "admin",
        json={"webhook_url": "http://metadata.google.internal/computeMetadata/v1/"},
        says="cloud metadata",
    ),
    Case(
        "policy-webhook-redis",
        "PUT",
        "/api/v1/policies",
        422,
        "webhook_url_refused",
        "admin",
        json={"webhook_url": "http://localhost:6379/"},
        says="loopback",
    ),
    Case(
        "policy-webhook-ipv6-loopback",
        "PUT",
        "/api/v1/policies",
        422,
        "webhook_url_refused",
        "admin",
        json={"webhook_url": "http://[::1]:5432/"},
        says="loopback",
    ),
    Case(
        "policy-webhook-ipv4-mapped",
        "PUT",
        "/api/v1/policies",
        422,
        "webhook_url_refused",
        "admin",
        json={"webhook_url": "http://[::ffff:10.0.0.1]/"},
        says="private",
    ),
    Case(
        "policy-webhook-decimal",
        "PUT",
        "/api/v1/policies",
        422,
        "webhook_url_refused",
        "admin",
        json={"webhook_url": "http://2130706433/internal-admin/"},
        says="loopback",
    ),
    # ---- permissions the caller lacks ------------------------------------------------------------
    Case(
        "perm-dev-create-user",
        "POST",
        "/api/v1/users",
        403,
        "forbidden",
        json={"email": "new@acme.test"},
        says="users.manage",
    ),
    Case("perm-dev-create-role", "POST", "/api/v1/roles", 403, "forbidden", json={"name": "Ops"}, says="roles.manage"),
    Case("perm-dev-audit", "GET", "/api/v1/audit", 403, "forbidden", says="audit.read"),
    Case("perm-token-roles", "GET", "/api/v1/roles", 403, "insufficient_scope", "dev_token", says="roles.read"),
    Case(
        "perm-dev-reactivate",
        "POST",
        lambda e: f"/api/v1/users/{e.ids['admin_user']}/reactivate",
        403,
        "forbidden",
        says="users.manage",
    ),
    Case(
        "perm-token-create-user",
        "POST",
        "/api/v1/users",
        403,
        "session_required",
        "dev_token",
        json={"email": "new@acme.test"},
        says="An API token cannot",
    ),
    Case(
        "perm-token-set-roles",
        "PUT",
        lambda e: f"/api/v1/users/{e.ids['dev_user']}/roles",
        403,
        "session_required",
        "dev_token",
        json={"roles": ["Admin"]},
    ),
    Case(
        "perm-token-reactivate",
        "POST",
        lambda e: f"/api/v1/users/{e.ids['dev_user']}/reactivate",
        403,
        "session_required",
        "dev_token",
    ),
    Case("perm-token-create-role", "POST", "/api/v1/roles", 403, "session_required", "dev_token", json={"name": "Ops"}),
    Case("perm-token-create-token", "POST", TOKENS, 403, "session_required", "dev_token", json=_tok({"name": "child"})),
    Case("perm-token-list-tokens", "GET", TOKENS, 403, "session_required", "dev_token"),
    Case(
        "perm-token-rotate-itself",
        "POST",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}/rotate",
        403,
        "session_required",
        "dev_token",
        json={},
    ),
    # ---- per-token restrictions: description, allowlist, self_rotate (create), PATCH, pause/resume ---
    Case(
        "restrict-desc-501-chars",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"description": "x" * 501}),
        says="501 characters",
    ),
    Case(
        "restrict-desc-2001-chars",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"description": "x" * 2001}),
        says="description",
    ),
    Case(
        "restrict-desc-rtl-override",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"description": "a\u202eb"}),
        says="U+202E",
    ),
    Case(
        "restrict-desc-escape",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"description": "\x1b[31m"}),
        says="U+001B",
    ),
    Case(
        "restrict-desc-holds-a-token",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"description": "ci " + UNKNOWN_TOKEN}),
        says="must not contain a token",
    ),
    Case(
        "restrict-desc-number",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"description": 5}),
        says="description",
    ),
    Case(
        "restrict-ips-string",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"allowed_ips": "10.0.0.0/8"}),
        says="allowed_ips",
    ),
    Case(
        "restrict-ips-ints",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"allowed_ips": [167772160]}),
        says="allowed_ips",
    ),
    Case(
        "restrict-ips-51",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"allowed_ips": [f"10.0.{i}.0/24" for i in range(51)]}),
        says="51 entries",
    ),
    Case(
        "restrict-ips-201",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"allowed_ips": ["10.0.0.0/8"] * 201}),
        says="allowed_ips",
    ),
    Case(
        "restrict-ips-prefix-33",
        "POST",
        TOKENS,
        422,
        "invalid_cidr",
        json=_tok({"allowed_ips": ["10.0.0.0/33"]}),
        says="10.0.0.0/33",
    ),
    Case(
        "restrict-ips-ipv6-prefix-129",
        "POST",
        TOKENS,
        422,
        "invalid_cidr",
        json=_tok({"allowed_ips": ["2001:db8::/129"]}),
        says="2001:db8::/129",
    ),
    Case(
        "restrict-ips-hostname",
        "POST",
        TOKENS,
        422,
        "invalid_cidr",
        json=_tok({"allowed_ips": ["office.example.com"]}),
        says="office.example.com",
    ),
    Case(
        "restrict-ips-sql", "POST", TOKENS, 422, "invalid_cidr", json=_tok({"allowed_ips": ["10.0.0.0/8' OR '1'='1"]})
    ),
    Case("restrict-ips-nul", "POST", TOKENS, 422, "invalid_cidr", json=_tok({"allowed_ips": ["10.0.0.0\x00/8"]})),
    Case(
        "restrict-ips-empty-string",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"allowed_ips": [""]}),
        says="allowed_ips",
    ),
    Case(
        "restrict-ips-51-chars",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"allowed_ips": ["1" * 51]}),
        says="allowed_ips",
    ),
    Case(
        "restrict-self-rotate-string",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"self_rotate": "true"}),
        says="self_rotate",
    ),
    Case(
        "restrict-self-rotate-int",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"self_rotate": 1}),
        says="self_rotate",
    ),
    # ---- a token's own rate limit and quota (create, service create, PATCH) ----------------------
    Case(
        "limit-rate-zero",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"rate_limit": {"requests": 0, "per": "minute"}}),
        says="rate_limit",
    ),
    Case(
        "limit-rate-negative",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"rate_limit": {"requests": -1, "per": "second"}}),
        says="rate_limit",
    ),
    Case(
        "limit-rate-huge",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"rate_limit": {"requests": 10**30, "per": "hour"}}),
        says="rate_limit",
    ),
    Case(
        "limit-rate-per-week",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"rate_limit": {"requests": 5, "per": "week"}}),
        says="rate_limit",
    ),
    Case(
        "limit-rate-string",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"rate_limit": {"requests": "5", "per": "hour"}}),
        says="rate_limit",
    ),
    Case(
        "limit-rate-float",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"rate_limit": {"requests": 1.5, "per": "hour"}}),
        says="rate_limit",
    ),
    Case(
        "limit-rate-extra-key",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"rate_limit": {"requests": 5, "per": "hour", "burst": 9}}),
        says="burst",
    ),
    Case(
        "limit-rate-not-object",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"rate_limit": "100/minute"}),
        says="rate_limit",
    ),
    Case(
        "limit-quota-negative",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"quota": {"remaining": -5}}),
        says="quota",
    ),
    Case(
        "limit-quota-huge",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"quota": {"remaining": 2**63}}),
        says="quota",
    ),
    Case(
        "limit-quota-bool",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"quota": {"remaining": True}}),
        says="quota",
    ),
    Case(
        "limit-quota-refill-zero",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"quota": {"remaining": 5, "refill": {"amount": 0, "interval": "day"}}}),
        says="quota",
    ),
    Case(
        "limit-quota-refill-year",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"quota": {"remaining": 5, "refill": {"amount": 5, "interval": "year"}}}),
        says="quota",
    ),
    Case(
        "limit-quota-refill-no-interval",
        "POST",
        TOKENS,
        422,
        "validation_error",
        json=_tok({"quota": {"remaining": 5, "refill": {"amount": 5}}}),
        says="quota",
    ),
    Case("limit-quota-list", "POST", TOKENS, 422, "validation_error", json=_tok({"quota": [100]}), says="quota"),
    Case(
        "limit-svc-rate-zero",
        "POST",
        "/api/v1/service-tokens",
        422,
        "validation_error",
        "admin",
        json={"name": "x", "scopes": [], "rate_limit": {"requests": 0, "per": "hour"}},
        says="rate_limit",
    ),
    Case(
        "limit-svc-quota-negative",
        "POST",
        "/api/v1/service-tokens",
        422,
        "validation_error",
        "admin",
        json={"name": "x", "scopes": [], "quota": {"remaining": -1}},
        says="quota",
    ),
    Case(
        "limit-patch-rate-bad",
        "PATCH",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}",
        422,
        "validation_error",
        json={"rate_limit": {"requests": 5, "per": "fortnight"}},
        says="rate_limit",
    ),
    Case(
        "limit-patch-quota-bad",
        "PATCH",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}",
        422,
        "validation_error",
        json={"quota": {"remaining": "lots"}},
        says="quota",
    ),
    Case(
        "patch-scope-widen",
        "PATCH",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}",
        422,
        "scopes_only_shrink",
        json={"scopes": ["users.read", "roles.read"]},
        says="roles.read",
    ),
    Case(
        "patch-scope-unknown",
        "PATCH",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}",
        422,
        "unknown_scope",
        json={"scopes": ["nope.nope"]},
        says="nope.nope",
    ),
    Case(
        "patch-expiry-3651-days",
        "PATCH",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}",
        422,
        "validation_error",
        json={"expires_in_days": 3651},
        says="between 1 and 3650",
    ),
    Case(
        "patch-expiry-past",
        "PATCH",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}",
        422,
        "validation_error",
        json={"expires_at": "2020-01-01"},
        says="in the past",
    ),
    Case(
        "patch-name-empty",
        "PATCH",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}",
        422,
        "validation_error",
        json={"name": "  "},
        says="must not be empty",
    ),
    Case(
        "patch-name-null",
        "PATCH",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}",
        422,
        "validation_error",
        json={"name": None},
        says="name",
    ),
    Case(
        "patch-ips-bad",
        "PATCH",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}",
        422,
        "invalid_cidr",
        json={"allowed_ips": ["300.1.1.1"]},
        says="300.1.1.1",
    ),
    Case(
        "patch-extra-field",
        "PATCH",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}",
        422,
        "validation_error",
        json={"user_id": 1},
        says="not a known field",
    ),
    Case(
        "patch-self-rotate-not-editable",
        "PATCH",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}",
        422,
        "validation_error",
        json={"self_rotate": True},
        says="not a known field",
    ),
    Case(
        "patch-body-array",
        "PATCH",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}",
        422,
        "validation_error",
        json=[],
        says="JSON object",
    ),
    Case(
        "patch-other-tenant",
        "PATCH",
        lambda e: f"{TOKENS}/{e.ids['other_token']}",
        404,
        "not_found",
        json={"name": "x"},
    ),
    Case(
        "patch-sibling", "PATCH", lambda e: f"{TOKENS}/{e.ids['sibling_token']}", 404, "not_found", json={"name": "x"}
    ),
    Case(
        "patch-revoked",
        "PATCH",
        lambda e: f"{TOKENS}/{e.ids['revoked_token']}",
        409,
        "not_editable",
        json={"name": "x"},
        says="revoked",
    ),
    Case(
        "patch-with-a-token",
        "PATCH",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}",
        403,
        "session_required",
        "dev_token",
        json={"allowed_ips": None},
    ),
    Case(
        "patch-no-csrf",
        "PATCH",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}",
        403,
        "csrf_failed",
        json={"name": "x"},
        csrf=False,
    ),
    Case("pause-other-tenant", "POST", lambda e: f"{TOKENS}/{e.ids['other_token']}/pause", 404, "not_found"),
    Case("pause-sibling", "POST", lambda e: f"{TOKENS}/{e.ids['sibling_token']}/pause", 404, "not_found"),
    Case(
        "pause-revoked",
        "POST",
        lambda e: f"{TOKENS}/{e.ids['revoked_token']}/pause",
        409,
        "not_pausable",
        says="revoked",
    ),
    Case("pause-id-zero", "POST", f"{TOKENS}/0/pause", 422, "validation_error", says="token_id"),
    Case("pause-no-csrf", "POST", lambda e: f"{TOKENS}/{e.ids['dev_token']}/pause", 403, "csrf_failed", csrf=False),
    Case(
        "resume-other-tenant-as-admin",
        "POST",
        lambda e: f"{TOKENS}/{e.ids['other_token']}/resume",
        404,
        "not_found",
        "admin",
    ),
    Case(
        "resume-revoked",
        "POST",
        lambda e: f"{TOKENS}/{e.ids['revoked_token']}/resume",
        409,
        "not_resumable",
        says="never comes back",
    ),
    Case(
        "resume-with-a-token",
        "POST",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}/resume",
        403,
        "session_required",
        "dev_token",
    ),
    Case(
        "self-rotate-grace-negative",
        "POST",
        f"{TOKENS}/self/rotate",
        422,
        "validation_error",
        "dev_token",
        json={"grace_period_seconds": -1},
        says="grace_period_seconds",
    ),
    Case(
        "self-rotate-grace-8-days",
        "POST",
        f"{TOKENS}/self/rotate",
        422,
        "validation_error",
        "dev_token",
        json={"grace_period_seconds": 691200},
        says="grace_period_seconds",
    ),
    Case(
        "self-rotate-grace-string",
        "POST",
        f"{TOKENS}/self/rotate",
        422,
        "validation_error",
        "dev_token",
        json={"grace_period_seconds": "60"},
        says="grace_period_seconds",
    ),
    Case(
        "self-rotate-body-array",
        "POST",
        f"{TOKENS}/self/rotate",
        422,
        "validation_error",
        "dev_token",
        json=[],
        says="JSON object",
    ),
    Case(
        "self-rotate-not-enabled",
        "POST",
        f"{TOKENS}/self/rotate",
        403,
        "self_rotate_not_enabled",
        "dev_token",
        json={},
        says="self_rotate",
    ),
    Case("self-rotate-with-a-session", "POST", f"{TOKENS}/self/rotate", 403, "token_required", json={}, says="Bearer"),
    Case("self-rotate-anonymous", "POST", f"{TOKENS}/self/rotate", 401, "not_authenticated", "anon", json={}),
    Case(
        "policy-require-allowlist-string",
        "PUT",
        "/api/v1/policies",
        422,
        "validation_error",
        "admin",
        json={"require_allowlist": "yes"},
        says="require_allowlist",
    ),
    # ---- rotate ----------------------------------------------------------------------------------
    Case(
        "rotate-grace-negative",
        "POST",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}/rotate",
        422,
        "validation_error",
        json={"grace_period_seconds": -1},
        says="grace_period_seconds",
    ),
    Case(
        "rotate-grace-string",
        "POST",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}/rotate",
        422,
        "validation_error",
        json={"grace_period_seconds": "60"},
        says="grace_period_seconds",
    ),
    Case(
        "rotate-grace-huge",
        "POST",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}/rotate",
        422,
        "validation_error",
        json={"grace_period_seconds": 10**30},
        says="grace_period_seconds",
    ),
    Case(
        "rotate-body-array",
        "POST",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}/rotate",
        422,
        "validation_error",
        json=[],
        says="JSON object",
    ),
    # ---- introspection (service credential) ------------------------------------------------------
    Case(
        "intro-no-credential",
        "POST",
        "/api/v1/introspect",
        401,
        "invalid_client",
        "anon",
        content=b"token=x",
        content_type="application/x-www-form-urlencoded",
    ),
    Case(
        "intro-garbage-basic",
        "POST",
        "/api/v1/introspect",
        401,
        "invalid_client",
        "anon",
        content=b"token=x",
        content_type="application/x-www-form-urlencoded",
        headers={"Authorization": "Basic !!!not base64"},
    ),
    Case(
        "intro-bearer-not-basic",
        "POST",
        "/api/v1/introspect",
        401,
        "invalid_client",
        "anon",
        content=b"token=x",
        content_type="application/x-www-form-urlencoded",
        headers=lambda e: {"Authorization": "Bearer " + e.dev_token},
    ),
    Case(
        "intro-text-plain",
        "POST",
        "/api/v1/introspect",
        415,
        "unsupported_media_type",
        "service",
        content=b"token=x",
        content_type="text/plain",
    ),
    Case(
        "intro-multipart",
        "POST",
        "/api/v1/introspect",
        415,
        "unsupported_media_type",
        "service",
        content=b'--b\r\nContent-Disposition: form-data; name="token"\r\n\r\nx\r\n--b--\r\n',
        content_type="multipart/form-data; boundary=b",
    ),
    Case(
        "intro-invalid-json",
        "POST",
        "/api/v1/introspect",
        400,
        "bad_request",
        "service",
        content=b'{"token": ',
        content_type="application/json",
    ),
    Case(
        "intro-deep-json",
        "POST",
        "/api/v1/introspect",
        400,
        "bad_request",
        "service",
        content=DEEP_ARRAYS,
        content_type="application/json",
    ),
    Case(
        "intro-no-token",
        "POST",
        "/api/v1/introspect",
        400,
        "bad_request",
        "service",
        content=b"token_type_hint=access_token",
        content_type="application/x-www-form-urlencoded",
        says="token",
    ),
    Case(
        "intro-token-not-a-string",
        "POST",
        "/api/v1/introspect",
        400,
        "bad_request",
        "service",
        json={"token": ["a"]},
        says="token",
    ),
    Case(
        "intro-nul-client-id",
        "POST",
        "/api/v1/introspect",
        401,
        "invalid_client",
        "anon",
        content=b"token=x",
        content_type="application/x-www-form-urlencoded",
        headers={"Authorization": "Basic " + base64.b64encode(b"kbai_sc_\x00:secret").decode()},
    ),
    Case(
        "intro-2mb-chunked",
        "POST",
        "/api/v1/introspect",
        413,
        "too_large",
        "service",
        content=_chunks(2_000_000, b"token="),
        content_type="application/x-www-form-urlencoded",
    ),
    # ---- service credentials (operators only: Acme is KBAI_OPERATOR_TENANT here, its admin may manage them) ----
    Case(
        "cred-revoke-unknown",
        "POST",
        CREDS + "/kbai_sc_0000000000000000/revoke",
        404,
        "not_found",
        "admin",
        says="Service credential",
    ),
    Case("cred-revoke-sql", "POST", CREDS + "/x'%20OR%20'1'='1/revoke", 404, "not_found", "admin"),
    Case("cred-revoke-nul", "POST", CREDS + "/kbai_sc_%00/revoke", 404, "not_found", "admin"),
    Case("cred-revoke-rtl-override", "POST", CREDS + "/kbai_sc_%E2%80%AE/revoke", 404, "not_found", "admin"),
    Case("cred-revoke-traversal", "POST", CREDS + "/..%2F..%2Ftokens/revoke", 404, "not_found", "admin"),
    Case(
        "cred-revoke-65-chars",
        "POST",
        CREDS + "/" + "a" * 65 + "/revoke",
        422,
        "validation_error",
        "admin",
        says="client_id",
    ),
    Case(
        "cred-revoke-no-csrf",
        "POST",
        lambda e: f"{CREDS}/{_client_id(e)}/revoke",
        403,
        "csrf_failed",
        "admin",
        csrf=False,
    ),
    Case(
        "cred-revoke-as-member",
        "POST",
        lambda e: f"{CREDS}/{_client_id(e)}/revoke",
        403,
        "forbidden",
        "dev",
        says="KBAI_OPERATOR_TENANT",
    ),
    Case(
        "cred-revoke-with-token",
        "POST",
        lambda e: f"{CREDS}/{_client_id(e)}/revoke",
        403,
        "forbidden",
        "dev_token",
        says="operators",
    ),
    Case("cred-list-as-member", "GET", CREDS, 403, "forbidden", "dev", says="KBAI_OPERATOR_TENANT"),
    Case("cred-list-with-token", "GET", CREDS, 403, "forbidden", "dev_token", says="operators"),
    Case("cred-list-anon", "GET", CREDS, 401, "not_authenticated", "anon"),
    # ---- login -----------------------------------------------------------------------------------
    Case(
        "login-email-list",
        "POST",
        "/api/v1/session",
        422,
        "validation_error",
        "anon",
        json={"email": ["dev@acme.test"], "password": "x"},
        says="email",
    ),
    Case(
        "login-password-too-long",
        "POST",
        "/api/v1/session",
        422,
        "validation_error",
        "anon",
        json={"email": "dev@acme.test", "password": "p" * 1025},
        says="password",
    ),
    Case(
        "login-form-body",
        "POST",
        "/api/v1/session",
        422,
        "validation_error",
        "anon",
        content=b"email=dev%40acme.test&password=dev-password-1",
        content_type="application/x-www-form-urlencoded",
    ),
    Case(
        "login-wrong-password",
        "POST",
        "/api/v1/session",
        401,
        "invalid_credentials",
        "anon",
        json={"email": "dev@acme.test", "password": "' OR '1'='1"},
    ),
    Case(
        "login-nul-email",
        "POST",
        "/api/v1/session",
        401,
        "invalid_credentials",
        "anon",
        json={"email": "dev@acme.test\x00", "password": "dev-password-1"},
    ),
    Case(
        "login-sql-email",
        "POST",
        "/api/v1/session",
        401,
        "invalid_credentials",
        "anon",
        json={"email": "' OR 1=1 --", "password": "x"},
    ),
    Case(
        "login-extra-field",
        "POST",
        "/api/v1/session",
        422,
        "validation_error",
        "anon",
        json={"email": "dev@acme.test", "password": "x", "admin": True},
        says="not a known field",
    ),
    # ---- tenants: logging into one, switching (people in several tenants) -----------------------------
    Case(
        "login-tenant-unknown",
        "POST",
        "/api/v1/session",
        401,
        "invalid_credentials",
        "anon",
        json={"email": "dev@acme.test", "password": "dev-password-1", "tenant": "Nope"},
    ),
    Case(
        "login-tenant-other",
        "POST",
        "/api/v1/session",
        401,
        "invalid_credentials",
        "anon",
        json=lambda e: {"email": "dev@acme.test", "password": "dev-password-1", "tenant": e.ids["other_tenant"]},
    ),
    Case(
        "login-tenant-huge-id",
        "POST",
        "/api/v1/session",
        401,
        "invalid_credentials",
        "anon",
        json={"email": "dev@acme.test", "password": "dev-password-1", "tenant": 99999999999999999999},
    ),
    Case(
        "login-tenant-digits-overflow",
        "POST",
        "/api/v1/session",
        401,
        "invalid_credentials",
        "anon",
        json={"email": "dev@acme.test", "password": "dev-password-1", "tenant": "9999999999"},
    ),
    Case(
        "login-tenant-nul",
        "POST",
        "/api/v1/session",
        401,
        "invalid_credentials",
        "anon",
        json={"email": "dev@acme.test", "password": "dev-password-1", "tenant": "Ac\x00me"},
    ),
    Case(
        "login-tenant-list",
        "POST",
        "/api/v1/session",
        422,
        "validation_error",
        "anon",
        json={"email": "dev@acme.test", "password": "dev-password-1", "tenant": ["Acme"]},
        says="tenant",
    ),
    Case(
        "switch-tenant-unknown",
        "POST",
        "/api/v1/session/tenant",
        404,
        "not_a_member",
        json={"tenant": "Nope"},
        says="not an active member",
    ),
    Case(
        "switch-tenant-other",
        "POST",
        "/api/v1/session/tenant",
        404,
        "not_a_member",
        json=lambda e: {"tenant": e.ids["other_tenant"]},
    ),
    Case(
        "switch-tenant-huge-id",
        "POST",
        "/api/v1/session/tenant",
        404,
        "not_a_member",
        json={"tenant": 99999999999999999999},
    ),
    Case("switch-tenant-nul", "POST", "/api/v1/session/tenant", 404, "not_a_member", json={"tenant": "a\x00b"}),
    Case(
        "switch-tenant-empty",
        "POST",
        "/api/v1/session/tenant",
        422,
        "validation_error",
        json={"tenant": "  "},
        says="tenant",
    ),
    Case("switch-tenant-missing", "POST", "/api/v1/session/tenant", 422, "validation_error", json={}, says="tenant"),
    Case(
        "switch-tenant-object",
        "POST",
        "/api/v1/session/tenant",
        422,
        "validation_error",
        json={"tenant": {"id": 1}},
        says="tenant",
    ),
    Case(
        "switch-tenant-no-csrf",
        "POST",
        "/api/v1/session/tenant",
        403,
        "csrf_failed",
        json={"tenant": "Acme"},
        csrf=False,
    ),
    Case(
        "switch-tenant-with-token",
        "POST",
        "/api/v1/session/tenant",
        403,
        "session_required",
        "dev_token",
        json={"tenant": "Acme"},
    ),
    Case(
        "switch-tenant-anon",
        "POST",
        "/api/v1/session/tenant",
        401,
        "not_authenticated",
        "anon",
        json={"tenant": "Acme"},
    ),
    Case("tenants-with-token", "GET", "/api/v1/session/tenants", 403, "session_required", "dev_token"),
    Case("tenants-anon", "GET", "/api/v1/session/tenants", 401, "not_authenticated", "anon"),
    Case(
        "user-password-given",
        "POST",
        "/api/v1/users",
        422,
        "validation_error",
        "admin",
        json={"email": "new@acme.test", "password": "a-password-123"},
        says="password",
    ),
    Case(
        "user-external-id-control",
        "POST",
        "/api/v1/users",
        422,
        "validation_error",
        "admin",
        json={"email": "new@acme.test", "external_id": "a\x07b"},
        says="U+0007",
    ),
    # ---- Idempotency-Key --------------------------------------------------------------------------
    Case(
        "idem-key-empty",
        "POST",
        TOKENS,
        400,
        "invalid_idempotency_key",
        json=_tok({}),
        headers={IDEM: ""},
        says="1 to 255 printable ASCII",
    ),
    Case(
        "idem-key-256-chars",
        "POST",
        TOKENS,
        400,
        "invalid_idempotency_key",
        json=_tok({}),
        headers={IDEM: "k" * 256},
        says="1 to 255",
    ),
    Case("idem-key-64k", "POST", TOKENS, 400, "invalid_idempotency_key", json=_tok({}), headers={IDEM: "k" * 65_536}),
    Case("idem-key-tab", "POST", TOKENS, 400, "invalid_idempotency_key", json=_tok({}), headers={IDEM: "a\tb"}),
    Case(
        "idem-key-control-char",
        "POST",
        TOKENS,
        400,
        "invalid_idempotency_key",
        json=_tok({}),
        headers={IDEM: b"a\x01b"},
    ),
    Case(
        "idem-key-non-ascii",
        "POST",
        TOKENS,
        400,
        "invalid_idempotency_key",
        json=_tok({}),
        headers={IDEM: "cl\u00e9".encode()},
    ),
    Case(
        "idem-key-zero-width",
        "POST",
        TOKENS,
        400,
        "invalid_idempotency_key",
        json=_tok({}),
        headers={IDEM: "\u200bkey".encode()},
    ),
    Case(
        "idem-key-rotate-256",
        "POST",
        lambda e: f"{TOKENS}/{e.ids['dev_token']}/rotate",
        400,
        "invalid_idempotency_key",
        json={},
        headers={IDEM: "r" * 256},
    ),
    Case(
        "idem-key-role-non-ascii",
        "POST",
        "/api/v1/roles",
        400,
        "invalid_idempotency_key",
        "admin",
        json={"name": "Ops"},
        headers={IDEM: "r\u00f4le".encode()},
    ),
    Case(
        "idem-key-user-256",
        "POST",
        "/api/v1/users",
        400,
        "invalid_idempotency_key",
        "admin",
        json={"email": "new@acme.test"},
        headers={IDEM: "u" * 256},
    ),
    Case(
        "idem-key-reused-other-body",
        "POST",
        TOKENS,
        422,
        "idempotency_key_reused",
        json=_tok({"name": "second try"}),
        headers={IDEM: USED_KEY},
        says="different request",
    ),
    Case(
        "idem-key-still-running",
        "POST",
        TOKENS,
        409,
        "idempotency_in_progress",
        json=RUNNING_BODY,
        headers={IDEM: RUNNING_KEY},
        says="still being processed",
    ),
    Case(
        "idem-key-bad-and-no-csrf",
        "POST",
        TOKENS,
        403,
        "csrf_failed",
        json=_tok({}),
        headers={IDEM: "k" * 256},
        csrf=False,
    ),
    # ---- routing ---------------------------------------------------------------------------------
    Case("route-unknown", "GET", "/api/v1/nope", 404, "not_found"),
    Case("route-wrong-method", "PATCH", TOKENS, 405, "method_not_allowed"),
    # ---- HTML forms (src/kbai/web/pages/): an error page with the code and message, nothing changed -----
    # API Keys, create: names
    _page(
        "form-tenant-switch-not-a-number",
        "/system-settings/tenant",
        422,
        "validation_error",
        _form(tenant="Acme' OR 1=1"),
        says="Pick one of your tenants",
    ),
    _page(
        "form-tenant-switch-other",
        "/system-settings/tenant",
        404,
        "not_a_member",
        lambda e: _form(tenant=str(e.ids["other_tenant"]))(e),
    ),
    _page("form-tenant-switch-overflow", "/system-settings/tenant", 404, "not_a_member", _form(tenant="9999999999")),
    _page(
        "form-tenant-switch-no-csrf",
        "/system-settings/tenant",
        403,
        "csrf_failed",
        _form(csrf=None, tenant="1"),
        says="This form has expired",
    ),
    Case(
        "invitation-unknown",
        "GET",
        "/invitations/" + "x" * 43,
        404,
        "invitation_invalid",
        "anon",
        csrf=False,
        page=True,
    ),
    Case("invitation-too-short", "GET", "/invitations/abc", 404, "invitation_invalid", "anon", csrf=False, page=True),
    Case(
        "invitation-non-ascii",
        "GET",
        "/invitations/" + "\u00e9" * 30,
        404,
        "invitation_invalid",
        "anon",
        csrf=False,
        page=True,
    ),
    Case("invitation-too-long", "GET", "/invitations/" + "x" * 300, 404, "not_found", "anon", csrf=False, page=True),
    _page(
        "invitation-post-unknown",
        "/invitations/" + "x" * 43,
        404,
        "invitation_invalid",
        _form("anon", None, password="a-password-123"),
        "anon",
    ),
    _page("form-key-name-bell", KEYS, 422, "validation_error", _key(name="a\x07b"), says="U+0007"),
    _page("form-key-name-nul", KEYS, 422, "validation_error", _key(name="a\x00b"), says="U+0000"),
    _page(
        "form-key-name-newline", KEYS, 422, "validation_error", _key(name="line1\r\nline2"), says="control character"
    ),
    _page("form-key-name-escape-sequence", KEYS, 422, "validation_error", _key(name="\x1b[31mred"), says="U+001B"),
    _page("form-key-name-rtl-mark", KEYS, 422, "validation_error", _key(name="\u200fabc"), says="U+200F"),
    _page(
        "form-key-name-rtl-override", KEYS, 422, "validation_error", _key(name="invoice\u202etxt.exe"), says="U+202E"
    ),
    _page("form-key-name-zero-width", KEYS, 422, "validation_error", _key(name="Za\u200bpier"), says="U+200B"),
    _page("form-key-name-101-chars", KEYS, 422, "validation_error", _key(name="x" * 101), says="101 characters"),
    _page(
        "form-key-name-1001-chars", KEYS, 422, "validation_error", _key(name="x" * 1001), says="too long or not valid"
    ),
    _page("form-key-name-empty", KEYS, 422, "validation_error", _key(name=""), says="Give the token a name"),
    _page("form-key-name-only-spaces", KEYS, 422, "validation_error", _key(name="   "), says="Give the token a name"),
    _page(
        "form-key-name-holds-a-token",
        KEYS,
        422,
        "validation_error",
        _key(name="ci " + UNKNOWN_TOKEN),
        says="must not contain a token",
    ),
    _page("form-key-name-taken-other-case", KEYS, 409, "name_taken", _key(name="EXISTING")),
    _page(
        "form-key-name-html-and-bad-scope",
        KEYS,
        422,
        "unknown_scope",
        _key(name="<script>alert(1)</script>", scopes="x.y"),
        says="x.y",
    ),
    _page(
        "form-key-name-sql-and-bad-expiry",
        KEYS,
        422,
        "validation_error",
        _key(name="Robert'); DROP TABLE tokens;--", expiry="-1"),
        says="Choose when",
    ),
    # API Keys, create: scopes
    _page("form-key-scope-unknown", KEYS, 422, "unknown_scope", _key(scopes="nope.nope"), says="nope.nope"),
    _page("form-key-scope-unheld", KEYS, 422, "unheld_scope", _key(scopes="users.manage"), says="users.manage"),
    _page(
        "form-key-scope-session-only",
        KEYS,
        422,
        "session_only_scope",
        _key(scopes="developer.manage_tokens"),
        says="developer.manage_tokens",
    ),
    _page(
        "form-key-scope-none-not-identity-only", KEYS, 422, "validation_error", _key(scopes=[]), says="Identity only"
    ),
    _page(
        "form-key-scope-unheld-among-held",
        KEYS,
        422,
        "unheld_scope",
        _key(scopes=["users.read", "audit.read"]),
        says="audit.read",
    ),
    _page(
        "form-key-scope-duplicated",
        KEYS,
        422,
        "duplicate_scope",
        _key(scopes=["users.read", "users.read"]),
        says="users.read",
    ),
    _page("form-key-scope-upper-case", KEYS, 422, "unknown_scope", _key(scopes="USERS.READ"), says="USERS.READ"),
    _page("form-key-scope-sql", KEYS, 422, "unknown_scope", _key(scopes="users.read' OR '1'='1")),
    _page("form-key-scope-html", KEYS, 422, "unknown_scope", _key(scopes="<script>alert(1)</script>")),
    _page("form-key-scope-huge", KEYS, 422, "unknown_scope", _key(scopes="x" * 5000)),
    # API Keys, create: expiration
    _page(
        "form-key-exp-negative", KEYS, 422, "validation_error", _key(expiry="-1"), says="Choose when the token expires"
    ),
    _page("form-key-exp-zero", KEYS, 422, "validation_error", _key(expiry="0"), says="Choose when the token expires"),
    _page(
        "form-key-exp-not-a-preset",
        KEYS,
        422,
        "validation_error",
        _key(expiry="45"),
        says="Choose when the token expires",
    ),
    _page(
        "form-key-exp-huge", KEYS, 422, "validation_error", _key(expiry="9" * 20), says="Choose when the token expires"
    ),
    _page("form-key-exp-21-chars", KEYS, 422, "validation_error", _key(expiry="9" * 21), says="too long or not valid"),
    _page(
        "form-key-exp-garbage", KEYS, 422, "validation_error", _key(expiry="soon"), says="Choose when the token expires"
    ),
    _page("form-key-exp-missing", KEYS, 422, "validation_error", _key(expiry=""), says="Choose when the token expires"),
    _page(
        "form-key-exp-custom-past",
        KEYS,
        422,
        "validation_error",
        _key(expiry="custom", expires_on="2020-01-01"),
        says="after today",
    ),
    _page(
        "form-key-exp-custom-today",
        KEYS,
        422,
        "validation_error",
        _key(expiry="custom", expires_on="2026-01-01"),
        says="after today",
    ),
    _page(
        "form-key-exp-custom-too-far",
        KEYS,
        422,
        "validation_error",
        _key(expiry="custom", expires_on="9999-12-31"),
        says="3650 days",
    ),
    _page(
        "form-key-exp-custom-garbage",
        KEYS,
        422,
        "validation_error",
        _key(expiry="custom", expires_on="tomorrow"),
        says="Pick a date",
    ),
    _page(
        "form-key-exp-custom-february-30",
        KEYS,
        422,
        "validation_error",
        _key(expiry="custom", expires_on="2027-02-30"),
        says="Pick a date",
    ),
    _page("form-key-exp-custom-missing", KEYS, 422, "validation_error", _key(expiry="custom"), says="Pick a date"),
    # API Keys, create: CSRF, content types, sizes
    _page("form-key-no-csrf", KEYS, 403, "csrf_failed", _key(csrf=None), says="expired"),
    _page("form-key-wrong-csrf", KEYS, 403, "csrf_failed", _key(csrf="forged"), says="expired"),
    _page(
        "form-key-non-ascii-csrf",
        KEYS,
        403,
        "csrf_failed",
        _key(csrf="\u00e9t\u00e9-\u2603-\U0001f600"),
        says="expired",
    ),
    _page(
        "form-key-other-sessions-csrf",
        KEYS,
        403,
        "csrf_failed",
        lambda e: _key(csrf=e.csrf["admin"])(e),
        says="expired",
    ),
    _page(
        "form-key-csrf-in-header-only",
        KEYS,
        403,
        "csrf_failed",
        _key(csrf=None),
        headers=lambda e: {"X-CSRF-Token": e.csrf["dev"]},
    ),
    _page(
        "form-key-json",
        KEYS,
        415,
        "unsupported_media_type",
        lambda e: (
            b'{"name": "j", "scopes": ["users.read"], "expiry": "never", "csrf_token": "%s"}' % e.csrf["dev"].encode()
        ),
        content_type="application/json",
        says="HTML form",
    ),
    _page(
        "form-key-text-plain", KEYS, 415, "unsupported_media_type", _key(), content_type="text/plain", says="HTML form"
    ),
    _page(
        "form-key-multipart-no-boundary",
        KEYS,
        400,
        "bad_request",
        _multipart(name="m"),
        content_type="multipart/form-data",
        says="could not be read",
    ),
    _page(
        "form-key-multipart-garbage",
        KEYS,
        400,
        "bad_request",
        b"garbage, not multipart",
        content_type="multipart/form-data; boundary=b",
        says="could not be read",
    ),
    _page(
        "form-key-multipart-unheld-scope",
        KEYS,
        422,
        "unheld_scope",
        lambda e: _multipart(name="m", scopes="users.manage", expiry="never", csrf_token=e.csrf["dev"]),
        content_type="multipart/form-data; boundary=b",
        says="users.manage",
    ),
    _page(
        "form-key-not-utf8",
        KEYS,
        422,
        "validation_error",
        lambda e: b"name=%C3%28&scopes=users.read&expiry=-1&csrf_token=" + e.csrf["dev"].encode(),
        says="Choose when",
    ),
    _page("form-key-10mb", KEYS, 413, "too_large", b"name=" + b"a" * 10_000_000, says="larger than"),
    _page("form-key-2mb-chunked", KEYS, 413, "too_large", _chunks(2_000_000, b"name="), says="larger than"),
    # API Keys: revoke
    _page(
        "form-revoke-other-tenant",
        lambda e: f"{KEYS}/{e.ids['other_token']}/revoke",
        404,
        "not_found",
        _form(),
        says="Token not found",
    ),
    _page(
        "form-revoke-sibling",
        lambda e: f"{KEYS}/{e.ids['sibling_token']}/revoke",
        404,
        "not_found",
        _form(),
        says="Token not found",
    ),
    _page("form-key-desc-501-chars", KEYS, 422, "validation_error", _key(description="x" * 501), says="501 characters"),
    _page("form-key-desc-rtl-override", KEYS, 422, "validation_error", _key(description="a\u202eb"), says="U+202E"),
    _page("form-key-ips-bad-cidr", KEYS, 422, "invalid_cidr", _key(allowed_ips="10.0.0.0/33"), says="10.0.0.0/33"),
    _page(
        "form-key-ips-hostname",
        KEYS,
        422,
        "invalid_cidr",
        _key(allowed_ips="203.0.113.0/24\noffice.example.com"),
        says="office.example.com",
    ),
    _page(
        "form-key-ips-51",
        KEYS,
        422,
        "validation_error",
        _key(allowed_ips="\n".join(f"10.0.{i}.0/24" for i in range(51))),
        says="51 entries",
    ),
    _page("form-key-rate-words", KEYS, 422, "validation_error", _key(rate_requests="lots"), says="rate limit"),
    _page("form-key-rate-zero", KEYS, 422, "validation_error", _key(rate_requests="0"), says="rate limit"),
    _page("form-key-rate-negative", KEYS, 422, "validation_error", _key(rate_requests="-5"), says="rate limit"),
    _page(
        "form-key-rate-per-week",
        KEYS,
        422,
        "validation_error",
        _key(rate_requests="5", rate_per="week"),
        says="rate limit",
    ),
    _page(
        "form-key-rate-unicode-digits",
        KEYS,
        422,
        "validation_error",
        _key(rate_requests="\u0665\u0660"),
        says="rate limit",
    ),
    _page("form-key-quota-fraction", KEYS, 422, "validation_error", _key(quota_requests="1.5"), says="quota"),
    _page("form-key-quota-huge", KEYS, 422, "validation_error", _key(quota_requests="9" * 30), says="quota"),
    _page(
        "form-key-quota-refill-year",
        KEYS,
        422,
        "validation_error",
        _key(quota_requests="100", quota_refill="year"),
        says="quota",
    ),
    _page(
        "form-pause-other-tenant",
        lambda e: f"{KEYS}/{e.ids['other_token']}/pause",
        404,
        "not_found",
        _form(),
        says="Token not found",
    ),
    _page(
        "form-pause-sibling",
        lambda e: f"{KEYS}/{e.ids['sibling_token']}/pause",
        404,
        "not_found",
        _form(),
        says="Token not found",
    ),
    _page(
        "form-pause-revoked",
        lambda e: f"{KEYS}/{e.ids['revoked_token']}/pause",
        409,
        "not_pausable",
        _form(),
        says="revoked",
    ),
    _page("form-pause-no-csrf", lambda e: f"{KEYS}/{e.ids['dev_token']}/pause", 403, "csrf_failed", _form(csrf=None)),
    _page(
        "form-resume-other-tenant",
        lambda e: f"{KEYS}/{e.ids['other_token']}/resume",
        404,
        "not_found",
        _form(),
        says="Token not found",
    ),
    _page(
        "form-resume-revoked",
        lambda e: f"{KEYS}/{e.ids['revoked_token']}/resume",
        409,
        "not_resumable",
        _form(),
        says="never comes back",
    ),
    _page("form-resume-huge-id", f"{KEYS}/99999999999999999999/resume", 404, "not_found", _form()),
    _page("form-revoke-absent", f"{KEYS}/2147483647/revoke", 404, "not_found", _form(), says="Token not found"),
    _page("form-revoke-huge-id", f"{KEYS}/99999999999999999999/revoke", 404, "not_found", _form()),
    _page("form-revoke-zero-id", f"{KEYS}/0/revoke", 404, "not_found", _form()),
    _page("form-revoke-text-id", f"{KEYS}/1%20OR%201=1/revoke", 404, "not_found", _form()),
    _page("form-revoke-no-csrf", lambda e: f"{KEYS}/{e.ids['dev_token']}/revoke", 403, "csrf_failed", _form(csrf=None)),
    _page(
        "form-revoke-wrong-csrf",
        lambda e: f"{KEYS}/{e.ids['dev_token']}/revoke",
        403,
        "csrf_failed",
        _form(csrf="forged"),
    ),
    # Roles: create and edit
    _page(
        "form-role-create-rtl",
        "/system-settings/roles",
        422,
        "validation_error",
        _form("admin", name="Ops\u202e"),
        "admin",
        says="U+202E",
    ),
    _page(
        "form-role-create-101",
        "/system-settings/roles",
        422,
        "validation_error",
        _form("admin", name="r" * 101),
        "admin",
        says="101 characters",
    ),
    _page(
        "form-role-create-taken", "/system-settings/roles", 409, "already_exists", _form("admin", name="Admin"), "admin"
    ),
    _page(
        "form-role-create-no-permission",
        "/system-settings/roles",
        403,
        "forbidden",
        _form(name="Ops"),
        says="roles.manage",
    ),
    _page(
        "form-role-unknown-permission",
        lambda e: f"/system-settings/roles/{e.ids['dev_role']}",
        422,
        "unknown_permission",
        _form("admin", permissions=["users.read", "nope.nope"]),
        "admin",
        says="nope.nope",
    ),
    _page(
        "form-role-sql-permission",
        lambda e: f"/system-settings/roles/{e.ids['dev_role']}",
        422,
        "unknown_permission",
        _form("admin", permissions="roles.read'; DROP TABLE roles;--"),
        "admin",
    ),
    _page(
        "form-role-other-tenant",
        lambda e: f"/system-settings/roles/{e.ids['other_role']}",
        404,
        "not_found",
        _form("admin", permissions="users.read"),
        "admin",
        says="Role not found",
    ),
    _page(
        "form-role-huge-id",
        "/system-settings/roles/99999999999999999999",
        404,
        "not_found",
        _form("admin", permissions="users.read"),
        "admin",
    ),
    _page("form-role-negative-id", "/system-settings/roles/-1", 404, "not_found", _form("admin"), "admin"),
    _page(
        "form-role-strip-admin",
        lambda e: f"/system-settings/roles/{e.ids['admin_role']}",
        422,
        "builtin_role",
        _form("admin", permissions="users.read"),
        "admin",
    ),
    _page(
        "form-role-edit-no-permission",
        lambda e: f"/system-settings/roles/{e.ids['dev_role']}",
        403,
        "forbidden",
        _form(permissions="users.manage"),
        says="roles.manage",
    ),
    _page(
        "form-role-no-csrf",
        lambda e: f"/system-settings/roles/{e.ids['dev_role']}",
        403,
        "csrf_failed",
        _form("admin", None, permissions="users.read"),
        "admin",
    ),
    # Users: create, roles, deactivate
    _page(
        "form-user-email-invalid",
        "/system-settings/users",
        422,
        "validation_error",
        _form("admin", email="not-an-email"),
        "admin",
        says="email",
    ),
    _page(
        "form-user-email-html",
        "/system-settings/users",
        422,
        "validation_error",
        _form("admin", email="<script>alert(1)</script>@acme.test"),
        "admin",
        says="email",
    ),
    _page(
        "form-user-email-sql",
        "/system-settings/users",
        422,
        "validation_error",
        _form("admin", email="' OR 1=1 --@acme.test"),
        "admin",
        says="email",
    ),
    _page(
        "form-user-email-look-alike",
        "/system-settings/users",
        422,
        "validation_error",
        _form("admin", email="d\u0435v@acme.test"),
        "admin",
        says="email",
    ),
    _page(
        "form-user-email-321-chars",
        "/system-settings/users",
        422,
        "validation_error",
        _form("admin", email="a" * 311 + "@acme.test"),
        "admin",
        says="too long or not valid",
    ),
    _page(
        "form-user-email-taken",
        "/system-settings/users",
        409,
        "already_exists",
        _form("admin", email="DEV@acme.test"),
        "admin",
    ),
    _page(
        "form-user-password-given",
        "/system-settings/users",
        422,
        "validation_error",
        _form("admin", email="new@acme.test", password="a-password-123"),
        "admin",
        says="invitation",
    ),
    _page(
        "form-user-role-unknown",
        "/system-settings/users",
        422,
        "validation_error",
        _form("admin", email="new@acme.test", roles="2147483647"),
        "admin",
        says="Unknown role",
    ),
    _page(
        "form-user-role-name-not-id",
        "/system-settings/users",
        422,
        "validation_error",
        _form("admin", email="new@acme.test", roles="Admin"),
        "admin",
        says="Unknown role",
    ),
    _page(
        "form-user-role-other-tenant",
        "/system-settings/users",
        422,
        "validation_error",
        lambda e: _form("admin", email="new@acme.test", roles=str(e.ids["other_role"]))(e),
        "admin",
        says="Unknown role",
    ),
    _page(
        "form-user-role-huge",
        "/system-settings/users",
        422,
        "validation_error",
        _form("admin", email="new@acme.test", roles="9" * 30),
        "admin",
        says="Unknown role",
    ),
    _page(
        "form-user-create-no-permission",
        "/system-settings/users",
        403,
        "forbidden",
        _form(email="new@acme.test"),
        says="users.manage",
    ),
    _page(
        "form-user-roles-other-tenant-user",
        lambda e: f"/system-settings/users/{e.ids['other_user']}/roles",
        404,
        "not_found",
        lambda e: _form("admin", roles=str(e.ids["dev_role"]))(e),
        "admin",
        says="User not found",
    ),
    _page(
        "form-user-roles-other-tenant-role",
        lambda e: f"/system-settings/users/{e.ids['dev_user']}/roles",
        422,
        "validation_error",
        lambda e: _form("admin", roles=str(e.ids["other_role"]))(e),
        "admin",
        says="Unknown role",
    ),
    _page(
        "form-user-roles-huge-user-id",
        "/system-settings/users/99999999999999999999/roles",
        404,
        "not_found",
        _form("admin", roles="1"),
        "admin",
    ),
    _page(
        "form-user-demote-last-admin",
        lambda e: f"/system-settings/users/{e.ids['admin_user']}/roles",
        409,
        "last_admin",
        lambda e: _form("admin", roles=str(e.ids["dev_role"]))(e),
        "admin",
    ),
    _page(
        "form-user-deactivate-other-tenant",
        lambda e: f"/system-settings/users/{e.ids['other_user']}/deactivate",
        404,
        "not_found",
        _form("admin"),
        "admin",
        says="User not found",
    ),
    _page(
        "form-user-deactivate-huge-id",
        "/system-settings/users/99999999999999999999/deactivate",
        404,
        "not_found",
        _form("admin"),
        "admin",
    ),
    _page(
        "form-user-deactivate-last-admin",
        lambda e: f"/system-settings/users/{e.ids['admin_user']}/deactivate",
        409,
        "last_admin",
        _form("admin"),
        "admin",
    ),
    _page(
        "form-user-deactivate-no-permission",
        lambda e: f"/system-settings/users/{e.ids['admin_user']}/deactivate",
        403,
        "forbidden",
        _form(),
        says="users.manage",
    ),
    _page(
        "form-user-deactivate-no-csrf",
        lambda e: f"/system-settings/users/{e.ids['dev_user']}/deactivate",
        403,
        "csrf_failed",
        _form("admin", None),
        "admin",
    ),
    _page(
        "form-user-reactivate-other-tenant",
        lambda e: f"/system-settings/users/{e.ids['other_user']}/reactivate",
        404,
        "not_found",
        _form("admin"),
        "admin",
        says="User not found",
    ),
    _page(
        "form-user-reactivate-huge-id",
        "/system-settings/users/99999999999999999999/reactivate",
        404,
        "not_found",
        _form("admin"),
        "admin",
    ),
    _page(
        "form-user-reactivate-no-permission",
        lambda e: f"/system-settings/users/{e.ids['admin_user']}/reactivate",
        403,
        "forbidden",
        _form(),
        says="users.manage",
    ),
    _page(
        "form-user-reactivate-no-csrf",
        lambda e: f"/system-settings/users/{e.ids['dev_user']}/reactivate",
        403,
        "csrf_failed",
        _form("admin", None),
        "admin",
    ),
    # "Ask an admin" requests
    _page(
        "form-ask-unknown-permission",
        KEYS + "/ask-admin",
        422,
        "unknown_permission",
        _form(permission="nope.nope"),
        says="nope.nope",
    ),
    _page(
        "form-ask-permission-sql",
        KEYS + "/ask-admin",
        422,
        "unknown_permission",
        _form(permission="users.read' OR '1'='1"),
    ),
    _page(
        "form-ask-permission-101-chars",
        KEYS + "/ask-admin",
        422,
        "validation_error",
        _form(permission="x" * 101),
        says="too long or not valid",
    ),
    _page(
        "form-ask-session-only-permission",
        KEYS + "/ask-admin",
        422,
        "validation_error",
        _form(permission="users.manage"),
        says="users.manage",
    ),
    _page("form-ask-no-csrf", KEYS + "/ask-admin", 403, "csrf_failed", _form(csrf=None, permission="audit.read")),
    _page(
        "form-grant-absent-request",
        "/system-settings/requests/2147483647/grant",
        404,
        "not_found",
        lambda e: _form("admin", role_id=str(e.ids["dev_role"]))(e),
        "admin",
    ),
    _page(
        "form-grant-huge-request-id",
        "/system-settings/requests/99999999999999999999/grant",
        404,
        "not_found",
        _form("admin", role_id="1"),
        "admin",
    ),
    _page(
        "form-dismiss-absent-request",
        "/system-settings/requests/2147483647/dismiss",
        404,
        "not_found",
        _form("admin"),
        "admin",
    ),
    # Login and logout
    _login_page(
        "form-login-wrong-password", 401, "invalid_credentials", "Wrong email or password", password="' OR '1'='1"
    ),
    _login_page("form-login-sql-email", 401, "invalid_credentials", "Wrong email or password", email="' OR 1=1 --"),
    _login_page(
        "form-login-nul-email", 401, "invalid_credentials", "Wrong email or password", email="dev@acme.test\x00"
    ),
    _login_page("form-login-other-tenants-password", 401, "invalid_credentials", password="admin-password-1"),
    _login_page(
        "form-login-email-321-chars", 422, "validation_error", "too long or not valid", email="a" * 311 + "@acme.test"
    ),
    _login_page(
        "form-login-password-1025-chars", 422, "validation_error", "too long or not valid", password="p" * 1025
    ),
    _login_page("form-login-no-csrf", 403, "csrf_failed", "expired", csrf=None),
    _login_page("form-login-csrf-mismatch", 403, "csrf_failed", "expired", csrf="not-the-cookie"),
    # Issue 13, finding 10: compare_digest on a str with non-ASCII raised TypeError (a 500)
    _login_page("form-login-csrf-non-ascii", 403, "csrf_failed", "expired", csrf="\u00e9t\u00e9-\u2603-\U0001f600"),
    _page(
        "form-login-csrf-non-ascii-both",
        "/login",
        403,
        "csrf_failed",
        _form("anon", "caf\u00e8", email="dev@acme.test", password="dev-password-1"),
        "anon",
        "expired",
        headers={"Cookie": "kbai_login_csrf=caf\u00e9".encode("latin-1")},
    ),
    _login_page(
        "form-login-json",
        415,
        "unsupported_media_type",
        "HTML form",
        content_type="application/json",
        body=b'{"email": "dev@acme.test", "password": "dev-password-1"}',
    ),
    _login_page("form-login-10mb", 413, "too_large", "larger than", body=b"email=" + b"a" * 10_000_000),
    _page("form-logout-no-csrf", "/logout", 403, "csrf_failed", _form(csrf=None)),
    # OIDC sign-in (the env's provider is configured but unreachable; a callback is judged before any network)
    _oidc("oidc-callback-no-state", 400, "oidc_state_mismatch", {"code": "abc"}),
    _oidc("oidc-callback-no-flow-cookie", 400, "oidc_state_mismatch", {"code": "abc", "state": "abc"}),
    _oidc(
        "oidc-callback-forged-flow-cookie",
        400,
        "oidc_state_mismatch",
        {"code": "abc", "state": "abc"},
        headers={"Cookie": "kbai_oidc_flow=gAAAAABforged-not-fernet"},
    ),
    _oidc(
        "oidc-callback-64k-flow-cookie",
        400,
        "oidc_state_mismatch",
        {"code": "abc", "state": "abc"},
        headers={"Cookie": "kbai_oidc_flow=" + "a" * 65_536},
    ),
    _oidc("oidc-callback-huge-state", 400, "oidc_state_mismatch", {"code": "abc", "state": "s" * 5000}),
    _oidc("oidc-callback-nul-state", 400, "oidc_state_mismatch", {"code": "abc", "state": "\x00"}),
    _oidc("oidc-callback-repeated-state", 400, "oidc_state_mismatch", [("state", "a"), ("state", "b"), ("code", "c")]),
    _oidc(
        "oidc-callback-error-markup",
        400,
        "oidc_state_mismatch",
        {"error": "<script>alert(1)</script>", "error_description": "' OR 1=1 --"},
    ),
    _oidc("oidc-callback-token-in-code", 400, "oidc_state_mismatch", {"code": UNKNOWN_TOKEN, "state": "x"}),
    _oidc("oidc-callback-dev-session", 400, "oidc_state_mismatch", {"code": "abc", "state": "abc"}, who="dev"),
    _oidc(
        "oidc-login-provider-unreachable",
        502,
        "oidc_provider_unreachable",
        {"next": "/system-settings"},
        path="/oidc/login",
    ),
    _oidc(
        "oidc-login-next-elsewhere",
        502,
        "oidc_provider_unreachable",
        {"next": "https://evil.example/x"},
        path="/oidc/login",
    ),
    _oidc("oidc-login-next-10k", 502, "oidc_provider_unreachable", {"next": "/" + "n" * 10_000}, path="/oidc/login"),
    Case(
        "oidc-callback-post",
        "POST",
        "/oidc/callback",
        405,
        "method_not_allowed",
        "anon",
        content=b"code=a&state=b",
        content_type=FORM,
    ),
]


SCIM = "/scim/v2"
SCIM_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
SCIM_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
SCIM_PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def _scim(id: str, method: str, path: Value, status: int, scim_type: str = "", who: str = "scim", **kw: Any) -> Case:
    return Case(id, method, path, status, scim_type, who, scim=True, csrf=False, **kw)


def _ops(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [SCIM_PATCH], "Operations": list(operations)}


SCIM_CASES: list[Case] = [
    # credentials: a revoked one, another kind of secret, none, look-alikes
    _scim("scim-revoked-credential", "GET", SCIM + "/Users", 401, who="scim_revoked", says="revoked"),
    _scim(
        "scim-unknown-credential",
        "GET",
        SCIM + "/Users",
        401,
        who="anon",
        headers={"Authorization": "Bearer kbai_scim_" + "0" * 64},
    ),
    _scim("scim-developer-token", "GET", SCIM + "/Users", 401, who="dev_token"),
    _scim("scim-no-credential", "GET", SCIM + "/Users", 401, who="anon"),
    _scim(
        "scim-upper-case-credential",
        "GET",
        SCIM + "/Users",
        401,
        who="anon",
        headers=lambda e: {"Authorization": "Bearer " + e.scim["acme"].upper()},
    ),
    _scim(
        "scim-basic-credential",
        "GET",
        SCIM + "/Users",
        401,
        who="anon",
        headers={"Authorization": "Basic Zm9vOmJhcg=="},
    ),
    _scim("scim-session-cookie", "GET", SCIM + "/Users", 401, who="dev"),
    # filters
    _scim("scim-filter-syntax", "GET", SCIM + "/Users", 400, "invalidFilter", params={"filter": "userName eq"}),
    _scim(
        "scim-filter-unknown-attribute",
        "GET",
        SCIM + "/Users",
        400,
        "invalidFilter",
        params={"filter": 'shoeSize eq "9"'},
    ),
    _scim(
        "scim-filter-bad-operator", "GET", SCIM + "/Users", 400, "invalidFilter", params={"filter": 'userName zz "a"'}
    ),
    _scim(
        "scim-filter-unclosed-quote", "GET", SCIM + "/Users", 400, "invalidFilter", params={"filter": 'userName eq "a'}
    ),
    _scim(
        "scim-filter-5000-chars",
        "GET",
        SCIM + "/Users",
        400,
        "invalidFilter",
        params={"filter": 'userName eq "' + "a" * 5000 + '"'},
    ),
    _scim(
        "scim-filter-deep-nesting",
        "GET",
        SCIM + "/Groups",
        400,
        "invalidFilter",
        params={"filter": "(" * 400 + 'displayName eq "a"'},
    ),
    _scim(
        "scim-filter-sql", "GET", SCIM + "/Users", 400, "invalidFilter", params={"filter": "userName eq '' OR 1=1 --"}
    ),
    _scim("scim-filter-nul", "GET", SCIM + "/Users", 400, "invalidFilter", params={"filter": 'userName eq "\x00'}),
    # paging
    _scim("scim-count-not-a-number", "GET", SCIM + "/Users", 400, "invalidValue", params={"count": "1e99"}),
    _scim("scim-start-index-text", "GET", SCIM + "/Users", 400, "invalidValue", params={"startIndex": "first"}),
    _scim("scim-search-count-text", "POST", SCIM + "/Users/.search", 400, "invalidValue", json={"count": "all"}),
    # bodies: not JSON, not an object, deep, 10 MB, unknown attributes, wrong schemas
    _scim(
        "scim-body-not-json",
        "POST",
        SCIM + "/Users",
        400,
        "invalidSyntax",
        content=b"userName=x",
        content_type="application/scim+json",
    ),
    _scim("scim-body-array", "POST", SCIM + "/Users", 400, "invalidSyntax", json=[{"userName": "x"}]),
    _scim(
        "scim-body-deep-nesting",
        "POST",
        SCIM + "/Users",
        400,
        "invalidSyntax",
        content=DEEP_ARRAYS,
        content_type="application/scim+json",
    ),
    _scim(
        "scim-body-10mb",
        "POST",
        SCIM + "/Users",
        413,
        content=b'{"userName": "' + b"a" * 10_000_000 + b'"}',
        content_type="application/scim+json",
    ),
    _scim(
        "scim-unknown-attribute",
        "POST",
        SCIM + "/Users",
        400,
        "invalidSyntax",
        json={"schemas": [SCIM_USER], "userName": "new@acme.test", "shoeSize": 44},
    ),
    _scim(
        "scim-wrong-schema",
        "POST",
        SCIM + "/Users",
        400,
        "invalidValue",
        json={"schemas": [SCIM_GROUP], "userName": "new@acme.test"},
    ),
    _scim("scim-no-schemas", "POST", SCIM + "/Users", 400, "invalidValue", json={"userName": "new@acme.test"}),
    _scim("scim-user-name-missing", "POST", SCIM + "/Users", 400, "invalidValue", json={"schemas": [SCIM_USER]}),
    _scim(
        "scim-user-name-nul",
        "POST",
        SCIM + "/Users",
        400,
        "invalidValue",
        json={"schemas": [SCIM_USER], "userName": "a\x00b"},
    ),
    _scim(
        "scim-user-name-300-chars",
        "POST",
        SCIM + "/Users",
        400,
        "invalidValue",
        json={"schemas": [SCIM_USER], "userName": "a" * 300},
    ),
    _scim(
        "scim-user-name-taken",
        "POST",
        SCIM + "/Users",
        409,
        "uniqueness",
        json={"schemas": [SCIM_USER], "userName": "DEV@acme.test"},
    ),
    _scim(
        "scim-user-active-word",
        "POST",
        SCIM + "/Users",
        400,
        "invalidValue",
        json={"schemas": [SCIM_USER], "userName": "new@acme.test", "active": "maybe"},
    ),
    _scim(
        "scim-user-token-in-name",
        "POST",
        SCIM + "/Users",
        400,
        "invalidValue",
        json={"schemas": [SCIM_USER], "userName": UNKNOWN_TOKEN},
    ),
    _scim("scim-group-no-name", "POST", SCIM + "/Groups", 400, "invalidValue", json={"schemas": [SCIM_GROUP]}),
    _scim(
        "scim-group-name-taken",
        "POST",
        SCIM + "/Groups",
        409,
        "uniqueness",
        json={"schemas": [SCIM_GROUP], "displayName": "Developers"},
    ),
    _scim(
        "scim-group-other-tenant-member",
        "POST",
        SCIM + "/Groups",
        400,
        "invalidValue",
        json=lambda e: {
            "schemas": [SCIM_GROUP],
            "displayName": "New",
            "members": [{"value": str(e.ids["other_user"])}],
        },
    ),
    # PATCH
    _scim(
        "scim-patch-unknown-op",
        "PATCH",
        lambda e: f"{SCIM}/Users/{e.ids['dev_user']}",
        400,
        "invalidValue",
        json=_ops({"op": "explode", "path": "active", "value": False}),
    ),
    _scim(
        "scim-patch-unknown-path",
        "PATCH",
        lambda e: f"{SCIM}/Users/{e.ids['dev_user']}",
        400,
        "invalidPath",
        json=_ops({"op": "replace", "path": "shoeSize", "value": 44}),
    ),
    _scim(
        "scim-patch-bad-value-filter",
        "PATCH",
        lambda e: f"{SCIM}/Groups/{e.ids['dev_role']}",
        400,
        "invalidPath",
        json=_ops({"op": "remove", "path": "members[value eq"}),
    ),
    _scim(
        "scim-patch-no-operations",
        "PATCH",
        lambda e: f"{SCIM}/Users/{e.ids['dev_user']}",
        400,
        "invalidValue",
        json={"schemas": [SCIM_PATCH]},
    ),
    _scim(
        "scim-patch-wrong-schema",
        "PATCH",
        lambda e: f"{SCIM}/Users/{e.ids['dev_user']}",
        400,
        "invalidValue",
        json={"schemas": [SCIM_USER], "Operations": [{"op": "replace", "path": "active", "value": False}]},
    ),
    _scim(
        "scim-patch-read-only-groups",
        "PATCH",
        lambda e: f"{SCIM}/Users/{e.ids['dev_user']}",
        400,
        "mutability",
        json=_ops({"op": "add", "path": "groups", "value": [{"value": "1"}]}),
    ),
    _scim(
        "scim-patch-add-other-tenant-member",
        "PATCH",
        lambda e: f"{SCIM}/Groups/{e.ids['dev_role']}",
        400,
        "invalidValue",
        json=lambda e: _ops({"op": "add", "path": "members", "value": [{"value": str(e.ids["other_user"])}]}),
    ),
    _scim(
        "scim-patch-last-admin",
        "PATCH",
        lambda e: f"{SCIM}/Users/{e.ids['admin_user']}",
        409,
        json=_ops({"op": "replace", "path": "active", "value": "False"}),
        says="admin",
    ),
    _scim(
        "scim-patch-rename-admin-group",
        "PATCH",
        lambda e: f"{SCIM}/Groups/{e.ids['admin_role']}",
        400,
        "mutability",
        json=_ops({"op": "replace", "path": "displayName", "value": "Owners"}),
    ),
    _scim(
        "scim-if-match-stale",
        "PATCH",
        lambda e: f"{SCIM}/Users/{e.ids['dev_user']}",
        412,
        json=_ops({"op": "replace", "path": "active", "value": False}),
        headers={"If-Match": 'W/"stale"'},
    ),
    # another tenant's ids, absent and malformed ids, built-in groups
    _scim("scim-other-tenant-user", "GET", lambda e: f"{SCIM}/Users/{e.ids['other_user']}", 404),
    _scim(
        "scim-other-tenant-user-patch",
        "PATCH",
        lambda e: f"{SCIM}/Users/{e.ids['other_user']}",
        404,
        json=_ops({"op": "replace", "path": "active", "value": False}),
    ),
    _scim("scim-other-tenant-user-delete", "DELETE", lambda e: f"{SCIM}/Users/{e.ids['other_user']}", 404),
    _scim("scim-other-tenant-group-delete", "DELETE", lambda e: f"{SCIM}/Groups/{e.ids['other_role']}", 404),
    _scim(
        "scim-other-credential-sees-nothing",
        "GET",
        lambda e: f"{SCIM}/Users/{e.ids['dev_user']}",
        404,
        who="scim_other",
    ),
    _scim("scim-id-huge", "GET", SCIM + "/Users/99999999999999999999", 404),
    _scim("scim-id-text", "GET", SCIM + "/Users/dev@acme.test", 404),
    _scim("scim-id-negative", "GET", SCIM + "/Groups/-1", 404),
    _scim("scim-delete-admin-group", "DELETE", lambda e: f"{SCIM}/Groups/{e.ids['admin_role']}", 400, "mutability"),
    _scim("scim-discovery-write", "PUT", SCIM + "/ServiceProviderConfig", 405, json={}),
    _scim("scim-unknown-endpoint", "GET", SCIM + "/Bulk", 404),
]
SCIM_PAGE = "/system-settings/provisioning"
SCIM_CASES += [
    _page(
        "form-scim-create-no-csrf",
        SCIM_PAGE,
        403,
        "csrf_failed",
        _form("admin", csrf=None, name="Okta"),
        "admin",
        "expired",
    ),
    _page(
        "form-scim-create-wrong-csrf", SCIM_PAGE, 403, "csrf_failed", _form("admin", csrf="nope", name="Okta"), "admin"
    ),
    _page("form-scim-create-member", SCIM_PAGE, 403, "forbidden", _form("dev", name="Okta"), "dev", "every permission"),
    _page(
        "form-scim-create-rtl", SCIM_PAGE, 422, "validation_error", _form("admin", name="Okta\u202e"), "admin", "U+202E"
    ),
    _page(
        "form-scim-create-101",
        SCIM_PAGE,
        422,
        "validation_error",
        _form("admin", name="o" * 101),
        "admin",
        "101 characters",
    ),
    _page("form-scim-create-taken", SCIM_PAGE, 409, "already_exists", _form("admin", name="hostile-input"), "admin"),
    _page(
        "form-scim-create-json",
        SCIM_PAGE,
        415,
        "unsupported_media_type",
        b'{"name": "x"}',
        "admin",
        content_type="application/json",
    ),
    _page(
        "form-scim-revoke-other-tenant",
        lambda e: f"{SCIM_PAGE}/{e.ids['other_scim']}/revoke",
        404,
        "not_found",
        _form("admin"),
        "admin",
    ),
    _page(
        "form-scim-revoke-huge-id",
        SCIM_PAGE + "/99999999999999999999/revoke",
        404,
        "not_found",
        _form("admin"),
        "admin",
    ),
    _page("form-scim-revoke-text-id", SCIM_PAGE + "/okta/revoke", 404, "not_found", _form("admin"), "admin"),
    _page(
        "form-scim-revoke-member",
        lambda e: f"{SCIM_PAGE}/{e.ids['acme_scim']}/revoke",
        403,
        "forbidden",
        _form("dev"),
        "dev",
    ),
    _page(
        "form-scim-revoke-no-csrf",
        lambda e: f"{SCIM_PAGE}/{e.ids['acme_scim']}/revoke",
        403,
        "csrf_failed",
        _form("admin", csrf=None),
        "admin",
    ),
]
CASES += SCIM_CASES

# ---- service tokens (owned by the tenant) and the hand-over at deactivation ----------------------
ST = "/api/v1/service-tokens"


def _deactivate_dev(e: Env) -> str:
    return f"/api/v1/users/{e.ids['dev_user']}/deactivate"


SERVICE_CASES = [
    Case("svc-create-no-name", "POST", ST, 422, "validation_error", "admin", json={"scopes": []}, says="name"),
    Case(
        "svc-create-scopes-not-a-list",
        "POST",
        ST,
        422,
        "validation_error",
        "admin",
        json={"name": "x", "scopes": "users.read"},
        says="scopes",
    ),
    Case(
        "svc-create-unknown-scope",
        "POST",
        ST,
        422,
        "unknown_scope",
        "admin",
        json={"name": "x", "scopes": ["nope.read"]},
        says="nope.read",
    ),
    Case(
        "svc-create-session-only-scope",
        "POST",
        ST,
        422,
        "session_only_scope",
        "admin",
        json={"name": "x", "scopes": ["developer.manage_service_tokens"]},
    ),
    Case(
        "svc-create-self-rotate-not-offered",
        "POST",
        ST,
        422,
        "validation_error",
        "admin",
        json={"name": "x", "scopes": [], "self_rotate": True},
        says="self_rotate",
    ),
    Case(
        "svc-create-bad-allowlist",
        "POST",
        ST,
        422,
        "invalid_cidr",
        "admin",
        json={"name": "x", "scopes": [], "allowed_ips": ["999.1.2.3/8"]},
    ),
    Case("svc-create-without-permission", "POST", ST, 403, "forbidden", "dev", json={"name": "x", "scopes": []}),
    Case(
        "svc-create-with-a-token",
        "POST",
        ST,
        403,
        "session_required",
        "anon",
        json={"name": "x", "scopes": []},
        headers=lambda e: {"Authorization": f"Bearer {e.dev_token}"},
    ),
    Case("svc-list-bad-cursor", "GET", ST, 422, "validation_error", "admin", params={"cursor": "abc"}),
    Case("svc-revoke-negative-id", "POST", f"{ST}/-1/revoke", 422, "validation_error", "admin"),
    Case("svc-revoke-huge-id", "POST", f"{ST}/99999999999999999999/revoke", 422, "validation_error", "admin"),
    Case(
        "svc-revoke-a-personal-token",
        "POST",
        lambda e: f"{ST}/{e.ids['dev_token']}/revoke",
        404,
        "not_found",
        "admin",
    ),
    Case(
        "svc-revoke-other-tenant",
        "POST",
        lambda e: f"{ST}/{e.ids['other_token']}/revoke",
        404,
        "not_found",
        "admin",
    ),
    Case(
        "svc-revoke-without-permission",
        "POST",
        lambda e: f"{ST}/{e.ids['service_token']}/revoke",
        403,
        "forbidden",
        "dev",
    ),
    Case(
        "svc-rotate-grace-negative",
        "POST",
        lambda e: f"{ST}/{e.ids['service_token']}/rotate",
        422,
        "validation_error",
        "admin",
        json={"grace_period_seconds": -1},
        says="grace_period_seconds",
    ),
    Case(
        "svc-rotate-grace-8-days",
        "POST",
        lambda e: f"{ST}/{e.ids['service_token']}/rotate",
        422,
        "validation_error",
        "admin",
        json={"grace_period_seconds": 8 * 86400},
        says="grace_period_seconds",
    ),
    Case(
        "svc-rotate-body-array",
        "POST",
        lambda e: f"{ST}/{e.ids['service_token']}/rotate",
        422,
        "validation_error",
        "admin",
        json=[1],
    ),
    Case("svc-rotate-huge-id", "POST", f"{ST}/99999999999999999999/rotate", 422, "validation_error", "admin", json={}),
    Case(
        "svc-rotate-a-personal-token",
        "POST",
        lambda e: f"{ST}/{e.ids['dev_token']}/rotate",
        404,
        "not_found",
        "admin",
        json={},
    ),
    Case(
        "svc-rotate-other-tenant",
        "POST",
        lambda e: f"{ST}/{e.ids['other_token']}/rotate",
        404,
        "not_found",
        "admin",
        json={},
    ),
    Case(
        "svc-rotate-without-permission",
        "POST",
        lambda e: f"{ST}/{e.ids['service_token']}/rotate",
        403,
        "forbidden",
        "dev",
        json={},
    ),
    Case("svc-ceiling-missing", "PUT", f"{ST}/ceiling", 422, "validation_error", "admin", json={}, says="permissions"),
    Case(
        "svc-ceiling-not-a-list",
        "PUT",
        f"{ST}/ceiling",
        422,
        "validation_error",
        "admin",
        json={"permissions": "users.read"},
    ),
    Case(
        "svc-ceiling-unknown",
        "PUT",
        f"{ST}/ceiling",
        422,
        "unknown_scope",
        "admin",
        json={"permissions": ["nope.read"]},
    ),
    Case(
        "svc-ceiling-session-only",
        "PUT",
        f"{ST}/ceiling",
        422,
        "session_only_scope",
        "admin",
        json={"permissions": ["users.manage"]},
    ),
    Case(
        "svc-ceiling-duplicate",
        "PUT",
        f"{ST}/ceiling",
        422,
        "duplicate_scope",
        "admin",
        json={"permissions": ["users.read", "users.read"]},
    ),
    Case(
        "svc-ceiling-without-permission",
        "PUT",
        f"{ST}/ceiling",
        403,
        "forbidden",
        "dev",
        json={"permissions": None},
    ),
    Case(
        "hand-over-not-a-list",
        "POST",
        _deactivate_dev,
        422,
        "validation_error",
        "admin",
        json={"hand_over": 5},
        says="hand_over",
    ),
    Case("hand-over-string-ids", "POST", _deactivate_dev, 422, "validation_error", "admin", json={"hand_over": ["1"]}),
    Case("hand-over-bool-ids", "POST", _deactivate_dev, 422, "validation_error", "admin", json={"hand_over": [True]}),
    Case("hand-over-negative", "POST", _deactivate_dev, 422, "validation_error", "admin", json={"hand_over": [-1]}),
    Case(
        "hand-over-too-many",
        "POST",
        _deactivate_dev,
        422,
        "validation_error",
        "admin",
        json={"hand_over": list(range(1, 1002))},
    ),
    Case("hand-over-unknown-field", "POST", _deactivate_dev, 422, "validation_error", "admin", json={"keep": []}),
    Case(
        "hand-over-someone-elses-token",
        "POST",
        _deactivate_dev,
        409,
        "not_handed_over",
        "admin",
        json=lambda e: {"hand_over": [e.ids["sibling_token"]]},
        says="Nothing was changed",
    ),
    Case(
        "hand-over-revoked-token",
        "POST",
        _deactivate_dev,
        409,
        "not_handed_over",
        "admin",
        json=lambda e: {"hand_over": [e.ids["dev_token"], e.ids["revoked_token"]]},
    ),
    Case(
        "user-tokens-other-tenant",
        "GET",
        lambda e: f"/api/v1/users/{e.ids['other_user']}/tokens",
        404,
        "not_found",
        "admin",
    ),
    Case("user-tokens-negative-id", "GET", "/api/v1/users/-1/tokens", 422, "validation_error", "admin"),
]
CASES += SERVICE_CASES

# The pages' forms for the same: API Keys' "New service token" and its revoke, and the deactivation step on Users.
SVC_FORM = KEYS + "/service-tokens"


def _svc(csrf: str | None = "session", who: str = "admin", **fields: str | list[str]) -> Callable[[Env], bytes]:
    """The New service token form, valid except for ``fields``."""
    return _form(who, csrf, **{"name": "form-service", "scopes": "users.read", "expiry": "90", **fields})


def _keep(*values: str | Callable[[Env], str], csrf: str | None = "session") -> Callable[[Env], bytes]:
    """The deactivation step of dev, keeping ``values`` (ids, or functions of the Env giving one)."""

    def make(e: Env) -> bytes:
        return _form("admin", csrf, hand_over=[v(e) if callable(v) else v for v in values])(e)

    return make


SERVICE_FORM_CASES = [
    _page(
        "form-svc-name-empty", SVC_FORM, 422, "validation_error", _svc(name=""), "admin", says="Give the token a name"
    ),
    _page(
        "form-svc-name-rtl-override",
        SVC_FORM,
        422,
        "validation_error",
        _svc(name="invoice\u202etxt.exe"),
        "admin",
        says="U+202E",
    ),
    _page("form-svc-name-101-chars", SVC_FORM, 422, "validation_error", _svc(name="x" * 101), "admin", says="101"),
    _page(
        "form-svc-name-1001-chars",
        SVC_FORM,
        422,
        "validation_error",
        _svc(name="x" * 1001),
        "admin",
        says="too long or not valid",
    ),
    _page(
        "form-svc-name-taken",
        SVC_FORM,
        409,
        "name_taken",
        _svc(name="SERVICE-ONE"),
        "admin",
        says="already has an active service token",
    ),
    _page("form-svc-scope-none", SVC_FORM, 422, "validation_error", _svc(scopes=[]), "admin", says="at least one"),
    _page(
        "form-svc-scope-session-only",
        SVC_FORM,
        422,
        "session_only_scope",
        _svc(scopes="developer.manage_service_tokens"),
        "admin",
    ),
    _page(
        "form-svc-scope-unknown", SVC_FORM, 422, "unknown_scope", _svc(scopes="nope.nope"), "admin", says="nope.nope"
    ),
    _page("form-svc-scope-sql", SVC_FORM, 422, "unknown_scope", _svc(scopes="users.read' OR '1'='1"), "admin"),
    _page("form-svc-exp-garbage", SVC_FORM, 422, "validation_error", _svc(expiry="soon"), "admin", says="expires"),
    _page(
        "form-svc-exp-custom-past",
        SVC_FORM,
        422,
        "validation_error",
        _svc(expiry="custom", expires_on="2001-01-01"),
        "admin",
        says="after today",
    ),
    _page(
        "form-svc-desc-501-chars", SVC_FORM, 422, "validation_error", _svc(description="x" * 501), "admin", says="501"
    ),
    _page(
        "form-svc-ips-bad-cidr",
        SVC_FORM,
        422,
        "invalid_cidr",
        _svc(allowed_ips="10.0.0.0/33"),
        "admin",
        says="10.0.0.0/33",
    ),
    _page(
        "form-svc-rate-words", SVC_FORM, 422, "validation_error", _svc(rate_requests="lots"), "admin", says="rate limit"
    ),
    _page(
        "form-svc-quota-fraction", SVC_FORM, 422, "validation_error", _svc(quota_requests="1.5"), "admin", says="quota"
    ),
    _page("form-svc-no-csrf", SVC_FORM, 403, "csrf_failed", _svc(csrf=None), "admin", says="expired"),
    _page("form-svc-member", SVC_FORM, 403, "forbidden", _svc(who="dev"), says="developer.manage_service_tokens"),
    _page(
        "form-svc-json",
        SVC_FORM,
        415,
        "unsupported_media_type",
        lambda e: b'{"name": "j", "scopes": ["users.read"], "csrf_token": "%s"}' % e.csrf["admin"].encode(),
        "admin",
        content_type="application/json",
    ),
    _page(
        "form-svc-revoke-personal",
        lambda e: f"{SVC_FORM}/{e.ids['dev_token']}/revoke",
        404,
        "not_found",
        _form("admin"),
        "admin",
    ),
    _page(
        "form-svc-revoke-other-tenant",
        lambda e: f"{SVC_FORM}/{e.ids['other_token']}/revoke",
        404,
        "not_found",
        _form("admin"),
        "admin",
    ),
    _page(
        "form-svc-revoke-huge-id", f"{SVC_FORM}/99999999999999999999/revoke", 404, "not_found", _form("admin"), "admin"
    ),
    _page("form-svc-revoke-text-id", f"{SVC_FORM}/1%20OR%201=1/revoke", 404, "not_found", _form("admin"), "admin"),
    _page(
        "form-svc-revoke-member",
        lambda e: f"{SVC_FORM}/{e.ids['service_token']}/revoke",
        403,
        "forbidden",
        _form("dev"),
        says="developer.manage_service_tokens",
    ),
    _page(
        "form-svc-revoke-no-csrf",
        lambda e: f"{SVC_FORM}/{e.ids['service_token']}/revoke",
        403,
        "csrf_failed",
        _form("admin", csrf=None),
        "admin",
    ),
    # Rotate, pause and resume of a service token, as its row's buttons send them.
    _page(
        "form-svc-rotate-bad-grace",
        lambda e: f"{SVC_FORM}/{e.ids['service_token']}/rotate",
        422,
        "validation_error",
        _form("admin", grace="5"),
        "admin",
        says="Choose how long the old token keeps working",
    ),
    _page(
        "form-svc-rotate-bad-lifetime",
        lambda e: f"{SVC_FORM}/{e.ids['service_token']}/rotate",
        422,
        "validation_error",
        _form("admin", grace="0", lifetime="99999"),
        "admin",
        says="lifetime",
    ),
    _page(
        "form-svc-rotate-personal",
        lambda e: f"{SVC_FORM}/{e.ids['dev_token']}/rotate",
        404,
        "not_found",
        _form("admin", grace="0"),
        "admin",
    ),
    _page(
        "form-svc-rotate-other-tenant",
        lambda e: f"{SVC_FORM}/{e.ids['other_token']}/rotate",
        404,
        "not_found",
        _form("admin", grace="0"),
        "admin",
    ),
    _page(
        "form-svc-rotate-member",
        lambda e: f"{SVC_FORM}/{e.ids['service_token']}/rotate",
        403,
        "forbidden",
        _form("dev", grace="0"),
        says="developer.manage_service_tokens",
    ),
    _page(
        "form-svc-rotate-no-csrf",
        lambda e: f"{SVC_FORM}/{e.ids['service_token']}/rotate",
        403,
        "csrf_failed",
        _form("admin", csrf=None, grace="0"),
        "admin",
    ),
    _page(
        "form-svc-pause-personal",
        lambda e: f"{SVC_FORM}/{e.ids['dev_token']}/pause",
        404,
        "not_found",
        _form("admin"),
        "admin",
    ),
    _page(
        "form-svc-pause-huge-id", f"{SVC_FORM}/99999999999999999999/pause", 404, "not_found", _form("admin"), "admin"
    ),
    _page(
        "form-svc-pause-member",
        lambda e: f"{SVC_FORM}/{e.ids['service_token']}/pause",
        403,
        "forbidden",
        _form("dev"),
        says="developer.manage_service_tokens",
    ),
    _page(
        "form-svc-pause-no-csrf",
        lambda e: f"{SVC_FORM}/{e.ids['service_token']}/pause",
        403,
        "csrf_failed",
        _form("admin", csrf=None),
        "admin",
    ),
    _page(
        "form-svc-resume-other-tenant",
        lambda e: f"{SVC_FORM}/{e.ids['other_token']}/resume",
        404,
        "not_found",
        _form("admin"),
        "admin",
    ),
    _page("form-svc-resume-text-id", f"{SVC_FORM}/1%20OR%201=1/resume", 404, "not_found", _form("admin"), "admin"),
    _page(
        "form-svc-resume-member",
        lambda e: f"{SVC_FORM}/{e.ids['service_token']}/resume",
        403,
        "forbidden",
        _form("dev"),
        says="developer.manage_service_tokens",
    ),
    _page(
        "form-hand-over-text",
        lambda e: f"/system-settings/users/{e.ids['dev_user']}/deactivate",
        422,
        "validation_error",
        _keep("abc"),
        "admin",
        says="reload the page",
    ),
    _page(
        "form-hand-over-negative",
        lambda e: f"/system-settings/users/{e.ids['dev_user']}/deactivate",
        422,
        "validation_error",
        _keep("-1"),
        "admin",
    ),
    _page(
        "form-hand-over-huge",
        lambda e: f"/system-settings/users/{e.ids['dev_user']}/deactivate",
        422,
        "validation_error",
        _keep("9" * 19),
        "admin",
    ),
    _page(
        "form-hand-over-sibling-token",
        lambda e: f"/system-settings/users/{e.ids['dev_user']}/deactivate",
        409,
        "not_handed_over",
        _keep(lambda e: str(e.ids["sibling_token"])),
        "admin",
        says="Nothing was changed",
    ),
    _page(
        "form-hand-over-other-tenant-token",
        lambda e: f"/system-settings/users/{e.ids['dev_user']}/deactivate",
        409,
        "not_handed_over",
        _keep(lambda e: str(e.ids["other_token"])),
        "admin",
    ),
    _page(
        "form-hand-over-revoked-token",
        lambda e: f"/system-settings/users/{e.ids['dev_user']}/deactivate",
        409,
        "not_handed_over",
        _keep(lambda e: str(e.ids["dev_token"]), lambda e: str(e.ids["revoked_token"])),
        "admin",
    ),
    _page(
        "form-hand-over-no-csrf",
        lambda e: f"/system-settings/users/{e.ids['dev_user']}/deactivate",
        403,
        "csrf_failed",
        _keep(lambda e: str(e.ids["dev_token"]), csrf=None),
        "admin",
    ),
]
CASES += SERVICE_FORM_CASES

# The service-token ceiling page's form (mode custom|default, permissions, csrf_token): refused, nothing changes.
CEILING_FORM = SVC_FORM + "/ceiling"


def _ceiling(csrf: str | None = "session", who: str = "admin", **fields: str | list[str]) -> Callable[[Env], bytes]:
    """The ceiling form, valid except for ``fields``."""
    return _form(who, csrf, **{"mode": "custom", "permissions": "users.read", **fields})


CEILING_FORM_CASES = [
    _page(
        "form-ceiling-unknown",
        CEILING_FORM,
        422,
        "unknown_scope",
        _ceiling(permissions="nope.nope"),
        "admin",
        says="nope",
    ),
    _page(
        "form-ceiling-session-only",
        CEILING_FORM,
        422,
        "session_only_scope",
        _ceiling(permissions="users.manage"),
        "admin",
        says="users.manage",
    ),
    _page(
        "form-ceiling-duplicate",
        CEILING_FORM,
        422,
        "duplicate_scope",
        _ceiling(permissions=["users.read", "users.read"]),
        "admin",
    ),
    _page(
        "form-ceiling-sql", CEILING_FORM, 422, "unknown_scope", _ceiling(permissions="users.read' OR '1'='1"), "admin"
    ),
    _page("form-ceiling-mode", CEILING_FORM, 400, "bad_request", _ceiling(mode="everything"), "admin", says="reload"),
    _page("form-ceiling-mode-21-chars", CEILING_FORM, 422, "validation_error", _ceiling(mode="x" * 21), "admin"),
    _page("form-ceiling-no-csrf", CEILING_FORM, 403, "csrf_failed", _ceiling(csrf=None), "admin", says="expired"),
    _page(
        "form-ceiling-member",
        CEILING_FORM,
        403,
        "forbidden",
        _ceiling(who="dev"),
        says="developer.manage_service_tokens",
    ),
    _page(
        "form-ceiling-json",
        CEILING_FORM,
        415,
        "unsupported_media_type",
        lambda e: b'{"mode": "default", "csrf_token": "%s"}' % e.csrf["admin"].encode(),
        "admin",
        content_type="application/json",
    ),
]
CASES += CEILING_FORM_CASES

OPAPI = "/api/v1/operator"


def _op(id: str, method: str, path: Value, status: int, code: str, who: str = "operator_api", **kw: Any) -> Case:
    return Case(id, method, path, status, code, who, csrf=False, **kw)


OPERATOR_CASES: list[Case] = [
    _op(
        "op-no-credential",
        "POST",
        OPAPI + "/tenants",
        401,
        "invalid_client",
        "anon",
        json={"name": "X", "external_id": "x"},
    ),
    _op(
        "op-developer-token",
        "GET",
        lambda e: f"{OPAPI}/tenants/{e.ids['dev_user']}",
        401,
        "invalid_client",
        "dev_token",
    ),
    _op(
        "op-session", "POST", OPAPI + "/tenants", 401, "invalid_client", "admin", json={"name": "X", "external_id": "x"}
    ),
    _op(
        "op-introspect-only",
        "POST",
        OPAPI + "/tenants",
        403,
        "forbidden",
        "service",
        json={"name": "X", "external_id": "x"},
        says="--allow tenants",
    ),
    _op(
        "op-introspect-only-token",
        "POST",
        lambda e: f"{OPAPI}/memberships/{e.ids['dev_user']}/tokens",
        403,
        "forbidden",
        "service",
        json=_tok({}),
        says="--allow tokens",
    ),
    _op(
        "op-tenant-unknown-field",
        "POST",
        OPAPI + "/tenants",
        422,
        "validation_error",
        json={"name": "X", "external_id": "x", "admin_password": "p"},
    ),
    _op("op-tenant-no-external-id", "POST", OPAPI + "/tenants", 422, "validation_error", json={"name": "X"}),
    _op(
        "op-tenant-name-rtl",
        "POST",
        OPAPI + "/tenants",
        422,
        "validation_error",
        json={"name": "X\u202e", "external_id": "x"},
    ),
    _op(
        "op-tenant-name-taken",
        "POST",
        OPAPI + "/tenants",
        409,
        "already_exists",
        json={"name": "Globex", "external_id": "new"},
    ),
    _op(
        "op-tenant-external-id-201",
        "POST",
        OPAPI + "/tenants",
        422,
        "validation_error",
        json={"name": "X", "external_id": "e" * 201},
    ),
    _op("op-tenant-id-huge", "GET", OPAPI + "/tenants/99999999999999999999", 422, "validation_error"),
    _op("op-tenant-absent", "GET", OPAPI + "/tenants/2147483647", 404, "not_found"),
    _op("op-find-empty-external-id", "GET", OPAPI + "/tenants", 422, "validation_error", params={"external_id": ""}),
    _op(
        "op-rename-taken",
        "PATCH",
        lambda e: f"{OPAPI}/tenants/{e.ids['acme']}",
        409,
        "already_exists",
        json={"name": "Globex"},
    ),
    _op(
        "op-limit-zero",
        "PATCH",
        lambda e: f"{OPAPI}/tenants/{e.ids['acme']}",
        422,
        "validation_error",
        json={"max_active_tokens": 0},
    ),
    _op(
        "op-limit-and-reset",
        "PATCH",
        lambda e: f"{OPAPI}/tenants/{e.ids['acme']}",
        422,
        "validation_error",
        json={"max_active_tokens": 5, "reset_max_active_tokens": True},
    ),
    _op(
        "op-membership-bad-email",
        "POST",
        lambda e: f"{OPAPI}/tenants/{e.ids['acme']}/memberships",
        422,
        "validation_error",
        json={"email": "not an email"},
    ),
    _op(
        "op-membership-email-taken",
        "POST",
        lambda e: f"{OPAPI}/tenants/{e.ids['acme']}/memberships",
        409,
        "already_exists",
        json={"email": "dev@acme.test"},
    ),
    _op(
        "op-membership-other-tenant-role",
        "POST",
        lambda e: f"{OPAPI}/tenants/{e.ids['acme']}/memberships",
        422,
        "validation_error",
        json=lambda e: {"email": "new@acme.test", "roles": [e.ids["other_role"]]},
    ),
    _op(
        "op-membership-password",
        "POST",
        lambda e: f"{OPAPI}/tenants/{e.ids['acme']}/memberships",
        422,
        "validation_error",
        json={"email": "new@acme.test", "password": "chosen-password"},
    ),
    _op(
        "op-deactivate-last-admin",
        "POST",
        lambda e: f"{OPAPI}/memberships/{e.ids['admin_user']}/deactivate",
        409,
        "last_admin",
    ),
    _op("op-deactivate-absent", "POST", OPAPI + "/memberships/2147483647/deactivate", 404, "not_found"),
    _op(
        "op-token-unheld-scope",
        "POST",
        lambda e: f"{OPAPI}/memberships/{e.ids['dev_user']}/tokens",
        422,
        "unheld_scope",
        json=_tok({"scopes": ["audit.read"]}),
    ),
    _op(
        "op-token-session-only-scope",
        "POST",
        lambda e: f"{OPAPI}/memberships/{e.ids['dev_user']}/tokens",
        422,
        "session_only_scope",
        json=_tok({"scopes": ["developer.manage_tokens"]}),
    ),
    _op(
        "op-token-name-taken",
        "POST",
        lambda e: f"{OPAPI}/memberships/{e.ids['dev_user']}/tokens",
        409,
        "name_taken",
        json=_tok({"name": "existing"}),
    ),
    _op(
        "op-token-bad-expiry",
        "POST",
        lambda e: f"{OPAPI}/memberships/{e.ids['dev_user']}/tokens",
        422,
        "validation_error",
        json=_tok({"expires_in_days": -1}),
    ),
    _op("op-token-absent-person", "POST", OPAPI + "/memberships/2147483647/tokens", 404, "not_found", json=_tok({})),
    _op(
        "op-token-body-10mb",
        "POST",
        lambda e: f"{OPAPI}/memberships/{e.ids['dev_user']}/tokens",
        413,
        "too_large",
        content=b'{"name": "' + b"a" * 10_000_000 + b'"}',
        content_type="application/json",
    ),
]
CASES += OPERATOR_CASES


# ---- environments -------------------------------------------------------------------------------
def _login(client: httpx.Client, email: str, password: str) -> str:
    r = client.post("/api/v1/session", json={"email": email, "password": password})
    assert r.status_code == 200, shown(r)
    return str(r.json()["csrf_token"])


def build_env(svc: Services, make_client: Callable[[], httpx.Client]) -> Env:
    """Acme (admin, dev, a sibling developer) and Globex; one token each; a service credential."""
    acme = build_world(svc)
    globex = build_world(svc, tenant="Globex", domain="globex.test")
    svc.access.create_user(OPERATOR, acme.tenant_id, "sibling@acme.test", "sibling-password-1", [acme.dev_role_id])
    sibling = acme.actor("sibling@acme.test")
    existing, dev_token = svc.tokens.create(acme.dev, "existing", ["users.read"])
    sibling_token, _ = svc.tokens.create(sibling, "sibling-secret", ["users.read"])
    other_token, _ = svc.tokens.create(globex.dev, "globex-secret", ["users.read"])
    service_token, _ = svc.tokens.create_service(acme.admin, "service-one", ["users.read"])
    revoked_token = svc.tokens.revoke(acme.dev, svc.tokens.create(acme.dev, "revoked-one", [])[0].id)
    credential, secret = svc.credentials.create(OPERATOR, "hostile-input")
    roles = {r.name: r.id for r in svc.access.list_roles(OPERATOR, acme.tenant_id)}
    other_roles = {r.name: r.id for r in svc.access.list_roles(OPERATOR, globex.tenant_id)}
    dev, admin, anon = make_client(), make_client(), make_client()
    csrf = {
        "dev": _login(dev, "dev@acme.test", "dev-password-1"),
        "admin": _login(admin, "admin@acme.test", "admin-password-1"),
    }
    basic = "Basic " + base64.b64encode(f"{credential.client_id}:{secret}".encode()).decode()
    # Idempotency keys dev has used: one answered (for another body), one whose request still runs.
    keys = IdempotencyStore(svc.db, svc.clock)
    used = keys.begin(
        f"user:{acme.dev.user_id}",
        "POST /api/v1/tokens",
        USED_KEY,
        fingerprint({}, json.dumps({"name": "first try", "scopes": []}).encode()),
    )
    assert isinstance(used, Claim)
    keys.finish(used, 201, {"id": existing.id, "token": None})
    keys.begin(
        f"user:{acme.dev.user_id}",
        "POST /api/v1/tokens",
        RUNNING_KEY,
        fingerprint({}, json.dumps(RUNNING_BODY).encode()),
    )
    ids = {
        "dev_token": existing.id,
        "sibling_token": sibling_token.id,
        "other_token": other_token.id,
        "service_token": service_token.id,
        "revoked_token": revoked_token.id,
        "admin_role": roles["Admin"],
        "dev_role": acme.dev_role_id,
        "other_role": other_roles["Developers"],
        "admin_user": acme.admin.user_id,
        "dev_user": acme.dev.user_id,
        "other_user": globex.dev.user_id,
        "other_tenant": globex.tenant_id,
    }
    acme_scim, acme_secret = svc.provisioning.create(OPERATOR, acme.tenant_id, "hostile-input")
    other_scim, other_secret = svc.provisioning.create(OPERATOR, globex.tenant_id, "hostile-input")
    scim = {"acme": acme_secret, "globex": other_secret}
    ids.update(acme_scim=acme_scim.id, other_scim=other_scim.id, acme=acme.tenant_id)
    revoked, scim["revoked"] = svc.provisioning.create(OPERATOR, acme.tenant_id, "revoked")
    svc.provisioning.revoke(OPERATOR, acme.tenant_id, revoked.id)
    for secret in (scim["acme"], scim["globex"]):
        assert svc.provisioning.authenticate(secret) is not None  # (marks it used: the cases write nothing)
    op_credential, op_secret = svc.credentials.create(OPERATOR, "hostile-operator-api", "introspect,tenants,tokens")
    op_basic = "Basic " + base64.b64encode(f"{op_credential.client_id}:{op_secret}".encode()).decode()
    return Env(svc, dev, admin, anon, csrf, dev_token, ids, basic, scim, op_basic)  # type: ignore[arg-type]


def send(env: Env, case: Case) -> httpx.Response:
    client = {"dev": env.dev, "admin": env.admin}.get(case.who, env.anon)
    headers: dict[str, Any] = {}
    if case.who in ("dev", "admin") and case.csrf and case.method != "GET":
        headers["X-CSRF-Token"] = env.csrf[case.who]
    if case.who == "dev_token":
        headers["Authorization"] = f"Bearer {env.dev_token}"
    if case.who == "service":
        headers["Authorization"] = env.basic
    if case.who == "operator_api":
        headers["Authorization"] = env.op_basic
    if case.who in ("scim", "scim_other", "scim_revoked"):
        headers["Authorization"] = (
            "Bearer " + env.scim[{"scim": "acme", "scim_other": "globex", "scim_revoked": "revoked"}[case.who]]
        )
    if case.content_type:
        headers["Content-Type"] = case.content_type
    headers.update(_v(case.headers, env))
    kwargs: dict[str, Any] = {"headers": headers, "params": _v(case.params, env)}
    if case.json is not MISSING:
        kwargs["json"] = _v(case.json, env)
    elif case.content is not None:
        kwargs["content"] = _v(case.content, env)
    return client.request(case.method, _v(case.path, env), **kwargs)


def check(env: Env, case: Case) -> list[str]:
    """Send ``case`` and return what is wrong (empty: the right error, and nothing changed)."""
    before = snapshot(env.svc.db)
    listed_before = env.dev.get(TOKENS).json()
    r = send(env, case)
    judge = scim_problems if case.scim else page_problems if case.page else error_problems
    problems = judge(r, case.status, case.code, case.says)
    if case.scim and case.who != "scim_other" and "globex" in r.text.lower():
        problems.append("the answer tells about another tenant")
    changed = changed_tables(before, snapshot(env.svc.db))
    if changed:
        problems.append(f"changed tables: {changed}")
    if env.dev.get(TOKENS).json() != listed_before:
        problems.append("dev's token list changed")
    leaked = env.dev_token in r.text or any(env.dev_token in v for v in r.headers.values())
    if leaked:
        problems.append("the response holds the full token")
    return [f"{p} (got {(shown_page if case.page else shown)(r)})" for p in problems]


@pytest.fixture(scope="module")
def env(module_database_url: str) -> Iterator[Env]:
    """The app in-process on a module-wide database of each backend (cases never change it)."""
    settings = Settings(
        database_url=module_database_url,
        auth_failures_per_minute=HIGH,
        login_failures_per_minute=HIGH,
        login_account_failures_per_day=HIGH,
        introspection_failures_per_minute=HIGH,
        operator_tenant="Acme",
        **UNREACHABLE_OIDC,
        **FAST_ARGON2,
    )
    svc = Services.build(settings, clock=FrozenClock())
    app = create_app(svc, start_background=False)
    clients: list[TestClient] = []

    def make() -> TestClient:
        clients.append(TestClient(app, raise_server_exceptions=False))
        return clients[-1]

    yield build_env(svc, make)
    for c in clients:
        c.close()
    svc.close()


# ---- the table, in-process on both backends ---------------------------------------------------
def test_the_table_has_enough_distinct_cases() -> None:
    assert len(CASES) >= 60
    assert len([c for c in CASES if c.page]) >= 60  # the HTML forms alone
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.id for c in CASES} >= LIVE


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_api_refuses_bad_input_and_changes_nothing(env: Env, case: Case) -> None:
    problems = check(env, case)
    assert not problems, f"{case.id}: " + "; ".join(problems)


def test_the_fixture_world_still_works_after_the_table(env: Env) -> None:
    """The cases ran against a live world: the known token and sessions still work (nothing broke)."""
    r = env.anon.get(ME, headers={"Authorization": f"Bearer {env.dev_token}"})
    assert r.status_code == 200 and r.json()["token_id"] == env.ids["dev_token"]
    # dev's two tokens of the fixture (the revoked one is the target of the revoked-token cases), no more.
    assert [t["name"] for t in env.dev.get(TOKENS).json()["tokens"]] == ["revoked-one", "existing"]
    assert env.dev.get(f"{TOKENS}/{env.ids['dev_token']}").json()["status"] == "active"  # not paused by a case


# ---- injection strings where they are valid: stored verbatim, nothing else touched -------------
INJECTIONS = [
    "Robert'); DROP TABLE tokens;--",
    "1 OR 1=1",
    "<script>alert(1)</script>",
    '{"$ne": null}',
    "../../etc/passwd",
    "%00%27",
    "${jndi:ldap://x}",
    "{{7*7}}",
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_injection_strings_in_names_are_plain_text(env: Env, text: str) -> None:
    h = {"X-CSRF-Token": env.csrf["dev"]}
    before = snapshot(env.svc.db)
    r = env.dev.post(TOKENS, json={"name": text, "scopes": ["users.read"]}, headers=h)
    assert r.status_code == 201, shown(r)
    made = r.json()
    try:
        assert made["name"] == text
        listed = {t["id"]: t["name"] for t in env.dev.get(TOKENS).json()["tokens"]}
        assert listed[made["id"]] == text
        after = snapshot(env.svc.db)
        assert changed_tables(before, after) == ["audit_events", "tokens"]
        assert len(after["tokens"]) == len(before["tokens"]) + 1
        assert len(after["audit_events"]) == len(before["audit_events"]) + 1
    finally:
        env.dev.post(f"{TOKENS}/{made['id']}/revoke", headers=h)


@pytest.mark.parametrize("text", INJECTIONS)
def test_injection_strings_in_form_names_are_plain_text(env: Env, text: str) -> None:
    """Through the API Keys form: the token is created with the name as typed, and the page shows it escaped."""
    before = snapshot(env.svc.db)
    r = env.dev.post(KEYS, content=_key(name=text)(env), headers={"Content-Type": FORM})
    # Post/redirect/get (the client follows the 303): the page the form lands on shows the token.
    assert [h.status_code for h in r.history] == [303], shown_page(r)
    assert r.status_code == 200 and 'role="alert"' not in r.text, shown_page(r)
    made = [t for t in env.dev.get(TOKENS).json()["tokens"] if t["status"] == "active" and t["name"] == text]
    try:
        assert len(made) == 1
        assert str(escape(text)) in r.text  # as text on the page, never as markup
        raw = text in r.text and str(escape(text)) != text
        assert not raw, "the name reached the page unescaped"
        after = snapshot(env.svc.db)
        assert changed_tables(before, after) == ["audit_events", "tokens"]
        assert len(after["tokens"]) == len(before["tokens"]) + 1
    finally:
        for t in made:
            env.dev.post(f"{TOKENS}/{t['id']}/revoke", headers={"X-CSRF-Token": env.csrf["dev"]})


# ---- over real HTTP: uvicorn's limits, 64 KiB headers, 10 MB bodies -----------------------------
@pytest.fixture
def live_env(services: Services, database_url: str, tmp_path: Path) -> Iterator[tuple[Env, Any]]:
    server = start_server(
        database_url,
        tmp_path,
        KBAI_AUTH_FAILURES_PER_MINUTE=str(HIGH),
        KBAI_LOGIN_FAILURES_PER_MINUTE=str(HIGH),
        KBAI_LOGIN_ACCOUNT_FAILURES_PER_DAY=str(HIGH),
        KBAI_INTROSPECTION_FAILURES_PER_MINUTE=str(HIGH),
    )
    clients: list[httpx.Client] = []

    def make() -> httpx.Client:
        clients.append(server.client())
        return clients[-1]

    try:
        yield build_env(services, make), server
    finally:
        for c in clients:
            c.close()
        server.stop()


# The subset that also goes over real HTTP: one or more of each kind (headers, bodies, ids, params).
LIVE = {
    "auth-truncated",
    "auth-upper-case",
    "auth-cyrillic-a",
    "auth-fullwidth-digit",
    "auth-64k",
    "auth-unknown",
    "auth-64k-cookie",
    "auth-64k-csrf",
    "name-nul",
    "name-rtl-override",
    "name-zero-width",
    "name-101-chars",
    "name-only-spaces",
    "scope-unknown",
    "scope-unheld",
    "scope-duplicated",
    "scopes-string",
    "exp-days-negative",
    "exp-days-bool",
    "exp-at-past",
    "exp-at-past-the-last-utc-second",
    "exp-both",
    "body-text-plain",
    "body-multipart",
    "body-invalid-json",
    "body-array",
    "body-deep-arrays",
    "body-not-utf8",
    "body-10mb",
    "body-2mb-chunked",
    "id-huge",
    "id-sql",
    "id-traversal",
    "id-other-tenant-revoke",
    "q-cursor-sql",
    "q-audit-since-before-utc",
    "user-email-html",
    "user-role-bool",
    "idem-key-256-chars",
    "idem-key-non-ascii",
    "intro-deep-json",
    "intro-2mb-chunked",
    "login-sql-email",
    "route-wrong-method",
    "form-key-name-rtl-override",
    "form-key-scope-unheld",
    "form-key-exp-custom-past",
    "form-key-no-csrf",
    "form-key-json",
    "form-key-multipart-garbage",
    "form-key-10mb",
    "form-key-2mb-chunked",
    "form-revoke-other-tenant",
    "form-role-huge-id",
    "form-user-role-other-tenant",
    "form-login-wrong-password",
    "form-login-10mb",
    "policy-webhook-metadata-ip",
}

LIVE_EXTRA = [
    Case("live-64k-other-header", "GET", ME, 401, "not_authenticated", "anon", headers={"X-Junk": "j" * 65_536}),
    Case(
        "live-64k-in-many-headers",
        "GET",
        ME,
        401,
        "not_authenticated",
        "anon",
        headers={f"X-Junk-{i}": "j" * 1024 for i in range(64)},
    ),
    Case(
        "live-64k-auth-on-auth-check",
        "GET",
        "/auth/check",
        401,
        "invalid_token",
        "anon",
        headers={"Authorization": "Bearer " + "A" * 65_536},
    ),
    Case(
        "live-10mb-chunked",
        "POST",
        TOKENS,
        413,
        "too_large",
        content=_chunks(10_000_000),
        content_type="application/json",
    ),
    Case(
        "live-10mb-introspect",
        "POST",
        "/api/v1/introspect",
        413,
        "too_large",
        "service",
        content=b"token=" + b"a" * 10_000_000,
        content_type="application/x-www-form-urlencoded",
    ),
]


def test_over_real_http_bad_input_gets_a_4xx_and_changes_nothing(live_env: tuple[Env, Any]) -> None:
    env, server = live_env
    failures: dict[str, list[str]] = {}
    for case in [c for c in CASES if c.id in LIVE] + LIVE_EXTRA:
        try:
            problems = check(env, case)
        except httpx.HTTPError as exc:  # a hang (timeout) or a dropped connection is a failure too
            problems = [f"{type(exc).__name__}: {exc}"]
        if problems:
            failures[case.id] = problems
    assert not failures, failures
    # Headers far beyond any sane size (1 MiB): uvicorn may refuse them itself; never a 5xx, never a hang.
    before = snapshot(env.svc.db)
    for headers in ({"Authorization": "Bearer " + "a" * 1_048_576}, {"Cookie": "kbai_session=" + "c" * 1_048_576}):
        try:
            r = env.anon.get(ME, headers=headers)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            continue  # the server hung up on it: a refusal, not a crash
        assert 400 <= r.status_code < 500, shown(r)
    assert changed_tables(before, snapshot(env.svc.db)) == []
    assert env.anon.get("/healthz").status_code == 200
    # Below HTTP semantics (uvicorn answers these itself, in plain text): still a 4xx, never a 5xx or a hang.
    port = int(server.url.rsplit(":", 1)[1])
    for raw in (
        b"GET /api/v1/me?q=" + b"a" * 65_536 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/v1/tokens HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST /api/v1/tokens HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"GET /api/v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x00\x01\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ):
        status_line = _raw_request(port, raw)
        assert re.match(rb"HTTP/1\.[01] 4\d\d ", status_line), status_line[:60]
    assert changed_tables(before, snapshot(env.svc.db)) == []
    # A client address from a trusted proxy (the test runs on 127.0.0.1) longer than the ip columns is cut
    # to fit: on PostgreSQL it used to make every audited write, logging in first, a 422.
    r = env.anon.post(
        "/api/v1/session",
        json={"email": "dev@acme.test", "password": "dev-password-1"},
        headers={"X-Forwarded-For": "f" * 100},
    )
    assert r.status_code == 200, shown(r)
    log = server.log.read_text()
    assert "Traceback" not in log and '"level": "ERROR"' not in log


def _raw_request(port: int, data: bytes) -> bytes:
    """Send bytes as they are (no client library would send these) and return the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


# ---- the CLI --------------------------------------------------------------------------------------
KBAI = str(Path(sys.executable).with_name("kbai"))


@dataclass(frozen=True)
class CliCase:
    id: str
    args: tuple[str, ...]
    exit_code: int
    says: str = ""
    env: tuple[tuple[str, str], ...] = ()


CLI_CASES = [
    CliCase("tenant-empty-name", ("tenant", "create", "", "--admin-email", "a@new.test"), 1, "must not be empty"),
    CliCase("tenant-rtl-name", ("tenant", "create", "evil\u202etxt", "--admin-email", "a@new.test"), 1, "U+202E"),
    CliCase("tenant-101-chars", ("tenant", "create", "t" * 101, "--admin-email", "a@new.test"), 1, "101 characters"),
    CliCase("tenant-taken", ("tenant", "create", "Acme", "--admin-email", "a@new.test"), 1, "already exists"),
    CliCase("tenant-sql-email", ("tenant", "create", "NewCo", "--admin-email", "' OR 1=1 --"), 1, "email"),
    CliCase(
        "user-unknown-tenant",
        ("user", "create", "--tenant", "Nope'; DROP TABLE users;--", "--email", "x@acme.test"),
        1,
        "not found",
    ),
    CliCase("user-html-email", ("user", "create", "--tenant", "Acme", "--email", "<script>@acme.test"), 1, "email"),
    CliCase(
        "user-sql-role",
        ("user", "create", "--tenant", "Acme", "--email", "x@acme.test", "--role", "Admin' OR '1'='1"),
        1,
        "Unknown role",
    ),
    CliCase(
        "limits-zero", ("limits", "set", "--user", "dev@acme.test", "--max-active-tokens", "0"), 1, "between 1 and"
    ),
    CliCase(
        "limits-huge",
        ("limits", "set", "--tenant", "Acme", "--max-active-tokens", "99999999999999999999"),
        1,
        "between 1 and",
    ),
    CliCase("limits-not-a-number", ("limits", "set", "--user", "dev@acme.test", "--max-active-tokens", "ten"), 2),
    CliCase(
        "user-reactivate-unknown",
        ("user", "reactivate", "--email", "nobody'; DROP TABLE users;--@acme.test"),
        1,
        "not found",
    ),
    CliCase("revoke-huge-id", ("tokens", "revoke", "99999999999999999999"), 1, "not found"),
    CliCase("revoke-not-a-number", ("tokens", "revoke", "1 OR 1=1"), 2),
    CliCase("list-traversal-user", ("tokens", "list", "--user", "../../etc/passwd"), 1, "not found"),
    CliCase("credential-blank-name", ("service-credential", "create", "   "), 1, "must not be empty"),
    CliCase("bad-database-url", ("tokens", "list"), 1, "KBAI_DATABASE_URL", (("KBAI_DATABASE_URL", "mysql://x/y"),)),
]


@pytest.fixture(scope="module")
def cli_db(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[tuple[str, Services]]:
    """A SQLite database with Acme and Globex for the CLI cases (the CLI itself has its own tests)."""
    import shutil

    path = tmp_path_factory.mktemp("hostile-cli") / "kbai.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    svc = Services.build(Settings(database_url=url, **FAST_ARGON2), clock=FrozenClock())
    acme = build_world(svc)
    build_world(svc, tenant="Globex", domain="globex.test")
    svc.tokens.create(acme.dev, "existing", ["users.read"])
    yield url, svc
    svc.close()


def _run_cli(url: str, case: CliCase) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBAI_")}
    env.update(
        KBAI_DATABASE_URL=url,
        KBAI_ARGON2_TIME_COST="1",
        KBAI_ARGON2_MEMORY_KIB="64",
        KBAI_ARGON2_PARALLELISM="1",
        NO_COLOR="1",
        TERM="dumb",
        COLUMNS="200",
    )
    env.update(dict(case.env))
    done = subprocess.run([KBAI, *case.args], env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    problems = []
    if done.returncode != case.exit_code:
        problems.append(f"exit {done.returncode}, expected {case.exit_code}")
    if "Traceback" in output or "<class" in output:
        problems.append("a traceback or Python repr")
    if len([line for line in output.splitlines() if "error" in line.lower()]) != 1:
        problems.append("not exactly one error line")
    if case.exit_code in (1, 2) and not (
        done.stderr.startswith("error: ")
        and done.stderr.count("\n") == 1
        and case.says in done.stderr
        and "unexpected" not in done.stderr
    ):
        problems.append(f"not one clear 'error: ...{case.says}...' line")
    return [f"{p}: {output[-300:]!r}" for p in problems]


def test_cli_refuses_bad_input_in_one_line_and_changes_nothing(cli_db: tuple[str, Services]) -> None:
    """Every case through the real console script (run side by side: each is a new Python process)."""
    url, svc = cli_db
    before = snapshot(svc.db)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip([c.id for c in CLI_CASES], pool.map(lambda c: _run_cli(url, c), CLI_CASES), strict=True))
    failures = {case_id: problems for case_id, problems in results.items() if problems}
    assert not failures, failures
    assert changed_tables(before, snapshot(svc.db)) == []


def test_cli_case_count() -> None:
    assert len(CLI_CASES) >= 15 and len({c.id for c in CLI_CASES}) == len(CLI_CASES)
