"""Activity: requests per hour over 30 days as an hour-of-week grid plus the raw series, the last use's
IP and user agent, the outside-usual-hours flag, who may see it, and the heatmap SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from kbai.clock import FrozenClock
from kbai.lifecycle.activity import heatmap_svg
from tests.conftest import OPERATOR, World, build_world
from tests.lifecycle.conftest import login

SVG = "{http://www.w3.org/2000/svg}"


def _use(world: World, token_id: int, when, times: int = 1) -> None:
    for _ in range(times):
        world.services.usage.record(token_id, when)
    world.services.usage.flush()


def test_grid_counts_and_the_30_day_window(world: World, clock: FrozenClock) -> None:
    svc = world.services
    t0 = clock.now()  # Thursday 2026-01-01 12:00 UTC
    view, _ = svc.tokens.create(world.dev, "n8n", ["users.read"])
    _use(world, view.id, t0 + timedelta(minutes=5), 3)
    _use(world, view.id, t0 + timedelta(days=1, hours=1, minutes=59), 2)  # Friday 13:59
    _use(world, view.id, t0 + timedelta(days=7, minutes=30))  # Thursday 12:30 a week later
    clock.set(t0 + timedelta(days=8))
    a = svc.activity.for_token(world.dev, view.id)
    assert a.total == 6 and len(a.grid) == 7 and all(len(row) == 24 for row in a.grid)
    assert a.grid[3][12] == 4 and a.grid[4][13] == 2
    assert sum(map(sum, a.grid)) == 6
    assert [(h.hour, h.requests) for h in a.hourly] == [
        (t0, 3),
        (t0 + timedelta(days=1, hours=1), 2),
        (t0 + timedelta(days=7), 1),
    ]
    assert a.until == t0 + timedelta(days=8, hours=1) and a.since == a.until - timedelta(days=30)
    # 30 days and 2 hours later the first hour has left the window.
    clock.set(t0 + timedelta(days=30, hours=1))
    a = svc.activity.for_token(world.dev, view.id)
    assert a.total == 3 and a.grid[3][12] == 1 and a.grid[4][13] == 2


def test_outside_usual_hours(world: World, clock: FrozenClock) -> None:
    svc = world.services
    t0 = clock.now()  # Thursday 12:00
    view, _ = svc.tokens.create(world.dev, "office hours job", ["users.read"])
    idle, _ = svc.tokens.create(world.dev, "idle at first", ["users.read"])
    _use(world, view.id, t0 + timedelta(minutes=1))  # Thu 12
    _use(world, view.id, t0 + timedelta(days=1, hours=1))  # Fri 13
    clock.set(t0 + timedelta(days=13))
    _use(world, view.id, t0 + timedelta(days=9, hours=-9))  # Sat 03:00, but still in the first 14 days
    a = svc.activity.for_token(world.dev, view.id)
    assert (a.usual_hours_known, a.outside_usual_hours) == (False, False)  # still learning
    clock.set(t0 + timedelta(days=15))
    _use(world, view.id, t0 + timedelta(days=14, minutes=10))  # Thu 12, a usual hour
    a = svc.activity.for_token(world.dev, view.id)
    assert (a.usual_hours_known, a.outside_usual_hours, a.unusual_hours) == (True, False, [])
    _use(world, view.id, t0 + timedelta(days=14, hours=2))  # Thu 14: never used then in the first 14 days
    a = svc.activity.for_token(world.dev, view.id)
    assert (a.outside_usual_hours, a.unusual_hours) == (True, [(3, 14)])
    # Saturday 03:00 was learned as usual, so using it again is fine.
    _use(world, view.id, t0 + timedelta(days=16, hours=-9))
    assert svc.activity.for_token(world.dev, view.id).unusual_hours == [(3, 14)]
    # A token not used in its first 14 days has nothing to compare with.
    _use(world, idle.id, t0 + timedelta(days=14, hours=5))
    a = svc.activity.for_token(world.dev, idle.id)
    assert (a.usual_hours_known, a.outside_usual_hours, a.total) == (False, False, 1)


def test_last_ip_and_user_agent_and_who_may_see(world: World, client: TestClient, clock: FrozenClock) -> None:
    svc = world.services
    view, token = svc.tokens.create(world.dev, "Zapier production", ["users.read"])
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/me", headers={**bearer, "User-Agent": "Zapier/1.0"}).status_code == 200
    assert (
        client.get("/auth/check", headers={**bearer, "User-Agent": "curl/8.5 kbai_pk_" + "a" * 64}).status_code == 200
    )
    svc.usage.flush()
    csrf = login(client, "dev@acme.test", "dev-password-1")
    r = client.get(f"/api/v1/tokens/{view.id}/activity")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 2 and body["grid"][3][12] == 2
    assert body["hourly"] == [{"hour": "2026-01-01T12:00:00Z", "requests": 2}]
    assert body["last_used_ip"] == "testclient"
    # The latest use wins; a user agent that holds something token-shaped is stored redacted.
    assert body["last_used_user_agent"] == "curl/8.5 kbai_pk_aaaa…"
    assert body["last_used_at"] == "2026-01-01T12:00:00Z" and body["outside_usual_hours"] is False
    svg = client.get(f"/api/v1/tokens/{view.id}/activity/heatmap.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    ET.fromstring(svg.text)
    # The token itself, without the review scope, may not read it (token management needs a session).
    client.cookies.clear()
    r = client.get(f"/api/v1/tokens/{view.id}/activity", headers=bearer)
    assert r.status_code == 403 and r.json()["error"]["code"] == "session_required"
    # A reviewer of the tenant (Admin) may; a member without the permission and other tenants get 404.
    login(client, "admin@acme.test", "admin-password-1")
    assert client.get(f"/api/v1/tokens/{view.id}/activity").status_code == 200
    svc.access.create_user(OPERATOR, world.tenant_id, "peer@acme.test", "peer-password-1", ["Developers"])
    login(client, "peer@acme.test", "peer-password-1")
    r = client.get(f"/api/v1/tokens/{view.id}/activity")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    build_world(svc, "Globex", "globex.test")
    login(client, "admin@globex.test", "admin-password-1")
    assert client.get(f"/api/v1/tokens/{view.id}/activity").status_code == 404
    assert client.get("/api/v1/tokens/999999/activity").status_code == 404
    assert client.get("/api/v1/tokens/0/activity").status_code == 422
    assert csrf


def test_heatmap_svg_is_valid_xml_without_style_or_script() -> None:
    grid = [[(day * 24 + hour) % 7 for hour in range(24)] for day in range(7)]
    grid[2][5] = 1000
    text = heatmap_svg(grid, title='Requests of "<script>alert(1)</script>" & co')
    root = ET.fromstring(text)
    assert root.tag == f"{SVG}svg"
    rects = root.findall(f"{SVG}rect")
    assert len(rects) == 7 * 24
    cell = next(r for r in rects if r.get("data-weekday") == "2" and r.get("data-hour") == "5")
    assert cell.get("data-count") == "1000" and cell.findtext(f"{SVG}title") == "Wed 05:00-06:00 UTC: 1000 requests"
    assert {r.get("fill") for r in rects if r.get("data-count") == "0"} == {"#ebedf0"}
    assert len({r.get("fill") for r in rects}) > 2
    for element in root.iter():
        assert "style" not in element.attrib and not element.tag.endswith("script")
        assert not any(name.startswith("on") for name in element.attrib)
    assert "<script>" not in text and root.findtext(f"{SVG}title") == 'Requests of "<script>alert(1)</script>" & co'
    ET.fromstring(heatmap_svg([[0] * 24 for _ in range(7)]))  # an empty grid renders too
    for bad in ([[0] * 24] * 6, [[0] * 23] * 7, [[-1] * 24] * 7):
        with pytest.raises(ValueError):
            heatmap_svg(bad)
