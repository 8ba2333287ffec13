"""Issue 13, finding 13: the audit CSV export neutralises formulas in every column, and a client address
taken from a trusted proxy's X-Forwarded-For is used only when it is an IP address (else the peer's)."""

from __future__ import annotations

import csv
import io

import pytest
from fastapi.testclient import TestClient

from kbai.app import create_app
from kbai.store import audit
from kbai.store.audit import Actor
from tests.conftest import LiveServer, World
from tests.gateway.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, seed

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
HOSTILE_FORWARDED = [
    '=HYPERLINK("http://evil.example/?x")',
    "+1+cmd",
    "-2+3",
    "@SUM(1)",
    "x\ty",
    "not-an-address",
    "999.1.1.1",
    "[::1",
    "203.0.113.7 junk",
]


def _csv(client: TestClient | object, **params: str) -> list[list[str]]:
    r = client.get("/api/v1/audit/export", params={"format": "csv", **params})
    assert r.status_code == 200, r.text
    return list(csv.reader(io.StringIO(r.text)))


def _no_formula(rows: list[list[str]]) -> list[str]:
    return [cell for row in rows[1:] for cell in row if cell.startswith(FORMULA_STARTS)]


def test_finding13_every_csv_column_goes_through_the_formula_guard(world: World) -> None:
    """Rows whose every text column starts with a formula character (as a proxy, an operator's permission
    key or a future action could make them): each cell comes out prefixed with a quote."""
    svc = world.services
    hostile = Actor(
        kind="user",
        user_id=world.admin.user_id,
        tenant_id=world.tenant_id,
        email="=x@acme.test",
        ip='=HYPERLINK("http://evil.example")',
    )
    with svc.db.write() as s:
        for start in FORMULA_STARTS:
            audit.record(
                s,
                hostile.with_ip(start + "1+1"),
                "limit.set",
                at=svc.clock.now(),
                target_type=start + "t",
                target_id=start + "SUM(A1)",
                details={"x": 1},
            )
    with TestClient(create_app(svc, start_background=False)) as c:
        assert c.post("/api/v1/session", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).status_code == 200
        rows = _csv(c, action="limit.set")
    assert len(rows) == 1 + len(FORMULA_STARTS)
    assert _no_formula(rows) == []
    header = rows[0]
    by_column = {name: {row[header.index(name)] for row in rows[1:]} for name in ("ip", "target_type", "target_id")}
    assert by_column["ip"] == {"'" + start + "1+1" for start in FORMULA_STARTS}  # quoted, not dropped
    assert by_column["target_id"] == {"'" + start + "SUM(A1)" for start in FORMULA_STARTS}
    assert {row[header.index("actor")] for row in rows[1:]} == {"user:=x@acme.test"}  # starts with "u": as is


def test_finding13_token_inventory_csv_guards_every_column_too(world: World) -> None:
    svc = world.services
    svc.tokens.create(world.admin, "=cmd|' /C calc'!A0", [])
    with TestClient(create_app(svc, start_background=False)) as c:
        assert c.post("/api/v1/session", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).status_code == 200
        r = c.get("/api/v1/admin/tokens/export")
        assert r.status_code == 200, r.text
        rows = list(csv.reader(io.StringIO(r.text)))
    assert len(rows) == 2 and _no_formula(rows) == []
    assert rows[1][rows[0].index("name")] == "'=cmd|' /C calc'!A0"


def test_finding13_forwarded_for_from_a_trusted_proxy_is_used_only_when_it_is_an_address(
    live_server: LiveServer, database_url: str
) -> None:
    """The test talks from 127.0.0.1, a trusted proxy by default: a hostile X-Forwarded-For is ignored
    (the peer's address is recorded), a real one is believed."""
    seed(database_url)
    with live_server.client() as admin:
        for value in HOSTILE_FORWARDED:
            r = admin.post(
                "/api/v1/session",
                json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                headers={"X-Forwarded-For": value},
            )
            assert r.status_code == 200, r.text
        for value in ("203.0.113.9", "2001:db8::7", "198.51.100.4:5555"):
            assert (
                admin.post(
                    "/api/v1/session",
                    json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                    headers={"X-Forwarded-For": value},
                ).status_code
                == 200
            )
        rows = _csv(admin, action="session.login")
    ips = [row[rows[0].index("ip")] for row in rows[1:]]
    assert _no_formula(rows) == []
    assert ips[:3] == ["198.51.100.4", "2001:db8::7", "203.0.113.9"]  # newest first
    assert ips[3:] == ["127.0.0.1"] * len(HOSTILE_FORWARDED)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_finding13_forwarded_for_from_an_untrusted_peer_is_ignored_in_process(world: World) -> None:
    """In-process too (the app reads the header itself now, not only `kbai serve`): from a peer that
    is not a trusted proxy the header changes nothing; from a trusted one, only a valid address counts."""
    svc = world.services
    app = create_app(svc, start_background=False)
    seen: dict[str, str] = {}
    for peer in ("127.0.0.1", "192.0.2.50"):
        for value in ("203.0.113.1", "=1+1"):
            with TestClient(app, client=(peer, 4321)) as c:
                c.post(
                    "/api/v1/session",
                    json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                    headers={"X-Forwarded-For": value},
                )
                with svc.db.read() as s:
                    seen[f"{peer} {value}"] = str(audit.events(s, world.tenant_id, limit=1)[0].ip)
    assert seen == {
        "127.0.0.1 203.0.113.1": "203.0.113.1",
        "127.0.0.1 =1+1": "127.0.0.1",
        "192.0.2.50 203.0.113.1": "192.0.2.50",
        "192.0.2.50 =1+1": "192.0.2.50",
    }
