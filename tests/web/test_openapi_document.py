"""The OpenAPI document is honest and usable for generated clients: stable camelCase operation ids,
the security each operation really takes (session-only ones never advertise bearer; cookie writes
need X-CSRF-Token), the headers kbai sends, only the errors an operation can give, tag descriptions
and servers. (That every answer matches the document is schemathesis's job: tests/web/test_schemathesis.py.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kbai.app import create_app
from kbai.config import Settings
from kbai.services import Services
from kbai.web.openapi import CAMEL, VERBS


@pytest.fixture(scope="module")
def doc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    path: Path = tmp_path_factory.mktemp("openapi") / "kbai.db"
    svc = Services.build(Settings(database_url=f"sqlite:///{path}"))
    yield create_app(svc, start_background=False).openapi()
    svc.close()


def _ops(doc: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {op["operationId"]: (method, path, op) for path, ops in doc["paths"].items() for method, op in ops.items()}


def test_operation_ids_are_stable_camel_case_verbs(doc: dict[str, Any]) -> None:
    ops = _ops(doc)
    assert len(ops) == sum(len(o) for o in doc["paths"].values()), "unique"
    for name in ops:
        verb = re.match(r"[a-z]+", name)
        assert CAMEL.match(name) and verb is not None and verb.group(0) in VERBS, name
    expected = {
        "createToken": ("post", "/api/v1/tokens"),
        "listTokens": ("get", "/api/v1/tokens"),
        "getToken": ("get", "/api/v1/tokens/{token_id}"),
        "revokeToken": ("post", "/api/v1/tokens/{token_id}/revoke"),
        "rotateToken": ("post", "/api/v1/tokens/{token_id}/rotate"),
        "getMe": ("get", "/api/v1/me"),
        "createSession": ("post", "/api/v1/session"),
        "deleteSession": ("delete", "/api/v1/session"),
        "checkAuth": ("get", "/auth/check"),
        "introspectToken": ("post", "/api/v1/introspect"),
        "listServiceCredentials": ("get", "/api/v1/service-credentials"),
    }
    assert {name: ops[name][:2] for name in expected} == expected


def test_security_is_what_each_operation_accepts(doc: dict[str, Any]) -> None:
    ops = _ops(doc)
    cookie_write = [{"APIKeyCookie": [], "csrfToken": []}]
    for name in ("createToken", "rotateToken", "deleteSession", "markNotificationRead"):
        assert ops[name][2]["security"] == cookie_write, name  # session only: no bearer
    for name in ("listTokens", "listNotifications"):
        assert ops[name][2]["security"] == [{"APIKeyCookie": []}], name
    assert ops["revokeToken"][2]["security"] == [{"HTTPBearer": []}, *cookie_write]  # a token may revoke itself
    assert ops["getMe"][2]["security"] == [{"HTTPBearer": []}, {"APIKeyCookie": []}]  # reads need no CSRF
    assert ops["checkAuth"][2]["security"] == [{"HTTPBearer": []}]
    assert ops["introspectToken"][2]["security"] == [{"serviceCredential": []}]
    assert "security" not in ops["createSession"][2] and "security" not in ops["getHealth"][2]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["csrfToken"] == {**schemes["csrfToken"], "type": "apiKey", "in": "header", "name": "X-CSRF-Token"}
    for name, (method, _path, op) in ops.items():
        for requirement in op.get("security", []):
            if "APIKeyCookie" in requirement:
                assert ("csrfToken" in requirement) == (method != "get"), name


def _header(doc: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    ref = value.get("$ref")
    return doc["components"]["headers"][ref.rsplit("/", 1)[1]] if ref else value


def test_response_headers_are_declared(doc: dict[str, Any]) -> None:
    ops = _ops(doc)
    for name, (_m, _p, op) in ops.items():
        for status, response in op["responses"].items():
            assert "X-Request-Id" in response.get("headers", {}), (name, status)
    check = ops["checkAuth"][2]["responses"]
    assert {"X-Kbai-User", "X-Kbai-User-Email", "X-Kbai-Tenant", "X-Kbai-Scopes", "X-Kbai-Token-Id"} <= set(
        check["200"]["headers"]
    )
    assert {"WWW-Authenticate", "Retry-After"} <= set(check["401"]["headers"])
    assert "Retry-After" in ops["createSession"][2]["responses"]["429"]["headers"]
    assert "WWW-Authenticate" in ops["getMe"][2]["responses"]["401"]["headers"]
    assert "Retry-After" in ops["createToken"][2]["responses"]["503"]["headers"]
    assert "Seconds" in _header(doc, ops["getMe"][2]["responses"]["429"]["headers"]["Retry-After"])["description"]


def test_only_the_errors_an_operation_can_give(doc: dict[str, Any]) -> None:
    ops = _ops(doc)

    def codes(name: str) -> set[str]:
        return {s for s in ops[name][2]["responses"] if s >= "400"}

    assert codes("getMe") == {"401", "429", "503"}  # no id, no input, no permission
    assert codes("listTokens") == {"401", "403", "422", "503"}  # session only: no token rate limit
    assert codes("createSession") == {"400", "401", "403", "413", "422", "429", "503"}
    assert "404" not in codes("createToken") and "409" in codes("createToken")
    assert "429" not in codes("checkAuth"), "forward-auth answers 401 with Retry-After instead"
    assert "404" in codes("revokeToken") and "404" not in codes("listRoles")


def test_tags_are_described_and_servers_given(doc: dict[str, Any]) -> None:
    described = {t["name"]: t.get("description", "") for t in doc["tags"]}
    used = {tag for _m, _p, op in _ops(doc).values() for tag in op.get("tags", [])}
    assert used <= set(described) and all(len(described[t]) > 20 for t in used)
    assert doc["servers"] and doc["servers"][0]["url"] == "/"
