"""Issue 7's pages in-process (FastAPI TestClient on the ``services`` fixture and its frozen clock):
rotation, hygiene badges, activity, the admin inventory, the token policy and notifications.
Access control and CSRF run on both backends; the rest is backend-independent and runs on SQLite."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from kbai import errors
from kbai.app import create_app
from kbai.clock import FrozenClock
from kbai.services import Services
from tests.conftest import World
from tests.ui.test_pages import TOKEN_RE, as_admin, as_dev, csrf_of, login, make_member

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])
KEYS = "/system-settings/api-keys"
INVENTORY = "/system-settings/tokens"
POLICY = "/system-settings/token-policy"
NOTIFICATIONS = "/system-settings/notifications"
ALERT_RE = re.compile(r'data-code="([^"]*)" role="alert">([^<]*)<')
SCRIPT = "<script>alert(1)</script>"


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services, start_background=False), follow_redirects=False) as c:
        yield c


def shown_error(page: str) -> tuple[str, str]:
    """(code, message) of the page's one error alert."""
    found = ALERT_RE.findall(page)
    assert len(found) == 1, f"{len(found)} alerts on the page"
    return found[0][0], html.unescape(found[0][1])


def full_tokens(page: str) -> int:
    return len(TOKEN_RE.findall(page))


def row_html(page: str, token_id: int) -> str:
    found = re.search(rf'<tr [^>]*id="token-{token_id}">(.*?)</tr>', page, re.S)
    assert found, f"no row for token {token_id}"
    return found.group(1)


def nav_links(page: str) -> list[str]:
    nav = re.search(r'<nav class="nav".*?</nav>', page, re.S)
    assert nav
    return re.findall(r'<a href="([^"]+)"', nav.group(0))


# ---- access control -----------------------------------------------------------------------------
def test_inventory_is_for_reviewers_only(client: TestClient, world: World) -> None:
    svc = world.services
    mine, _ = svc.tokens.create(world.dev, "Zapier production", ["users.read"])
    make_member(world)
    for email, password in (("dev@acme.test", "dev-password-1"), ("member@acme.test", "member-password-1")):
        csrf = login(client, email, password)
        assert INVENTORY not in nav_links(client.get("/system-settings").text)
        r = client.get(INVENTORY)
        assert r.status_code == 403 and r.headers["content-type"].startswith("text/html")
        assert shown_error(r.text) == (
            "forbidden",
            "You need the developer.review_tokens permission to review the tenant's tokens.",
        )
        r = client.post(f"{INVENTORY}/{mine.id}/revoke", data={"csrf_token": csrf})
        assert r.status_code == 403 and shown_error(r.text)[0] == "forbidden"
    assert svc.tokens.get(world.dev, mine.id).status == "active"

    as_admin(client)
    assert INVENTORY in nav_links(client.get("/system-settings").text)
    page = client.get(INVENTORY)
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    row = row_html(page.text, mine.id)
    assert "dev@acme.test" in row and "Zapier production" in row and mine.prefix in row


def test_policy_page_is_for_role_managers_only(client: TestClient, world: World) -> None:
    svc = world.services
    csrf = as_dev(client)
    assert POLICY not in nav_links(client.get("/system-settings").text)
    r = client.get(POLICY)
    assert r.status_code == 403
    assert shown_error(r.text) == ("forbidden", "You need the roles.manage permission to change the token policy.")
    r = client.post(POLICY, data={"max_lifetime_days": "1", "expiration_required": "1", "csrf_token": csrf})
    assert r.status_code == 403
    assert svc.policies.get(world.tenant_id).max_lifetime_days is None

    as_admin(client)
    assert POLICY in nav_links(client.get("/system-settings").text)
    r = client.get(POLICY)
    assert r.status_code == 200 and 'name="max_lifetime_days"' in r.text


def test_new_forms_need_csrf(client: TestClient, world: World) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.admin, "Own token", ["users.read"])
    dev_token, _ = svc.tokens.create(world.dev, "Dev token", ["users.read"])
    svc.inventory.revoke(world.admin, dev_token.id)  # gives dev a notification
    (note,) = svc.notifications.list(world.dev.user_id or 0)
    attempts = [
        ("admin", f"{KEYS}/{view.id}/rotate", {"grace": "86400", "lifetime": "same"}),
        ("admin", f"{INVENTORY}/{view.id}/revoke", {}),
        ("admin", POLICY, {"max_lifetime_days": "30", "expiration_required": "1"}),
        ("dev", f"{NOTIFICATIONS}/{note.id}/read", {}),
        ("dev", f"{NOTIFICATIONS}/read-all", {}),
    ]
    for who, path, data in attempts:
        as_admin(client) if who == "admin" else as_dev(client)
        for token in (None, "wrong-token"):
            r = client.post(path, data=data if token is None else {**data, "csrf_token": token})
            assert r.status_code == 403, path
            assert shown_error(r.text) == ("csrf_failed", errors.FORM_EXPIRED.template), path
    assert [(t.id, t.status, t.revoked_at) for t in svc.tokens.list(world.admin.user_id or 0)] == [
        (view.id, "active", None)
    ]
    assert svc.policies.get(world.tenant_id).max_lifetime_days is None
    assert svc.notifications.unread(world.dev.user_id or 0) == 1


def test_odd_filters_are_a_page_on_both_backends(client: TestClient, world: World) -> None:
    # PostgreSQL refuses a NUL in a string: the page must refuse it first, as a page.
    as_admin(client)
    for query in ("owner=%00", "owner=dev%00%40acme.test&status=active", "status=%00", "cursor=%00"):
        r = client.get(f"{INVENTORY}?{query}")
        assert r.status_code == 422 and r.headers["content-type"].startswith("text/html"), query
        assert shown_error(r.text)[0] == "validation_error"
    r = client.get(f"{NOTIFICATIONS}?cursor=%00")
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")


# ---- rotation -----------------------------------------------------------------------------------
@SQLITE_ONLY
def test_rotate_shows_the_new_token_once_and_links_both(client: TestClient, world: World, clock: FrozenClock) -> None:
    svc = world.services
    old, old_plain = svc.tokens.create(world.dev, "Zapier production", ["users.read"], expires_in_days=90)
    clock.advance(days=10)
    csrf = as_dev(client)
    form = client.get(KEYS).text
    assert f'action="{KEYS}/{old.id}/rotate"' in form
    assert 'name="grace" value="86400" data-say="keeps working for 24 hours" checked' in form
    assert '<option value="same" selected>Same as now (90 days)</option>' in form

    r = client.post(f"{KEYS}/{old.id}/rotate", data={"grace": "86400", "lifetime": "same", "csrf_token": csrf})
    # Post/redirect/get, as on create: the new token is on the page the redirect lands on, once.
    assert r.status_code == 303 and r.headers["location"] == KEYS and full_tokens(r.text) == 0
    r = client.get(r.headers["location"])
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    shown = TOKEN_RE.findall(r.text)
    assert len(shown) == 1, "the new token is on the page exactly once"
    fresh = shown[0] != old_plain
    assert fresh
    assert "Token “Zapier production” rotated" in r.text and "It will not be shown again" in r.text
    now = clock.now().replace(microsecond=0)
    assert (
        'keeps working until <strong><time datetime="' + (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        in r.text
    )
    new_id = svc.tokens.verify(shown[0]).record.token_id  # type: ignore[union-attr]
    new = svc.tokens.get(world.dev, new_id)
    assert new.rotated_from_id == old.id and new.expires_at == now + timedelta(days=90)
    assert svc.tokens.get(world.dev, old.id).revoked_at == now + timedelta(days=1)
    assert svc.tokens.verify(old_plain).authenticated, "the old token works through its grace period"

    listing = client.get(KEYS).text
    assert full_tokens(listing) == 0
    old_row, new_row = row_html(listing, old.id), row_html(listing, new.id)
    assert f'Replaced by <a href="#token-{new.id}">Zapier production <code>{new.prefix}</code></a>' in old_row
    assert f'Rotated from <a href="#token-{old.id}">Zapier production <code>{old.prefix}</code></a>' in new_row
    assert "Stops <time" in old_row and ">Active<" in old_row
    assert "/rotate" not in old_row, "a token in its grace period already has a successor: rotate that one"
    assert "/rotate" in new_row

    clock.advance(days=1)
    assert not svc.tokens.verify(old_plain).authenticated
    as_dev(client)  # sessions last 8 hours
    assert ">Revoked<" in row_html(client.get(KEYS).text, old.id)


@SQLITE_ONLY
def test_rotating_a_revoked_or_expired_token_is_refused(client: TestClient, world: World, clock: FrozenClock) -> None:
    svc = world.services
    revoked, _ = svc.tokens.create(world.dev, "Old script", ["users.read"])
    svc.tokens.revoke(world.dev, revoked.id)
    expired, _ = svc.tokens.create(world.dev, "Short job", ["users.read"], expires_in_days=7)
    clock.advance(days=8)
    csrf = as_dev(client)
    page = client.get(KEYS).text
    assert "/rotate" not in page, "only active tokens offer Rotate"
    for view, status in ((revoked, "revoked"), (expired, "expired")):
        r = client.post(f"{KEYS}/{view.id}/rotate", data={"grace": "0", "lifetime": "same", "csrf_token": csrf})
        assert r.status_code == 409
        assert shown_error(r.text) == ("not_rotatable", f"Only an active token can be rotated; this one is {status}.")
        assert full_tokens(r.text) == 0
    assert len(svc.tokens.list(world.dev.user_id or 0)) == 2


@SQLITE_ONLY
def test_rotate_bad_input_is_a_4xx_and_changes_nothing(client: TestClient, world: World) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "Zapier production", ["users.read"])
    theirs, _ = svc.tokens.create(world.admin, "Admin script", ["users.read"])
    csrf = as_dev(client)
    cases = [
        (view.id, {"grace": "abc"}, 422, "validation_error"),
        (view.id, {"grace": "1"}, 422, "validation_error"),
        (view.id, {"grace": "-3600"}, 422, "validation_error"),
        (view.id, {"grace": "0", "lifetime": "365"}, 422, "validation_error"),
        (view.id, {"grace": "0", "lifetime": "x" * 30}, 422, "validation_error"),
        (view.id, {"grace": "0", "lifetime": SCRIPT}, 422, "validation_error"),
        (theirs.id, {"grace": "0"}, 404, "not_found"),
        ("2147483647", {"grace": "0"}, 404, "not_found"),
        ("99999999999999999999", {"grace": "0"}, 404, "not_found"),
        ("abc", {"grace": "0"}, 404, "not_found"),
    ]
    for token_id, data, status, code in cases:
        r = client.post(f"{KEYS}/{token_id}/rotate", data={**data, "csrf_token": csrf})
        assert r.status_code == status, (token_id, data)
        assert r.headers["content-type"].startswith("text/html")
        assert shown_error(r.text)[0] == code, (token_id, data)
        assert SCRIPT not in r.text
    assert [t.id for t in svc.tokens.list(world.dev.user_id or 0)] == [view.id]
    assert svc.tokens.get(world.dev, view.id).revoked_at is None


# ---- hygiene badges -----------------------------------------------------------------------------
@SQLITE_ONLY
def test_hygiene_badges(client: TestClient, world: World, clock: FrozenClock) -> None:
    svc = world.services
    idle, _ = svc.tokens.create(world.dev, "Idle script", ["users.read"])
    busy, _ = svc.tokens.create(world.dev, "Busy sync", ["users.read"])
    fresh_seen, _ = svc.tokens.create(world.dev, "New one", ["users.read"])
    as_dev(client)
    page = client.get(KEYS).text
    # "Never used" is not repeated as a badge: the Last used column says Never.
    assert re.findall(r'class="flag flag-[a-z0-9_]+">([^<]+)<', row_html(page, fresh_seen.id)) == []
    assert ">Never</span></td>" in row_html(page, fresh_seen.id)

    clock.advance(days=100)
    svc.usage.record(busy.id, clock.now() - timedelta(days=1))
    svc.usage.flush()
    revoked, _ = svc.tokens.create(world.dev, "Gone", ["users.read"])
    svc.tokens.revoke(world.dev, revoked.id)
    as_dev(client)  # sessions last 8 hours
    page = client.get(KEYS).text
    flags = {
        v.id: re.findall(r'class="flag flag-[a-z0-9_]+">([^<]+)<', row_html(page, v.id)) for v in (idle, busy, revoked)
    }
    assert flags == {
        idle.id: ["Unused for 90+ days", "Older than 90 days — rotate"],
        busy.id: ["Older than 90 days — rotate"],
        revoked.id: [],
    }


# ---- tenant policy ------------------------------------------------------------------------------
@SQLITE_ONLY
def test_policy_shapes_the_create_and_rotate_forms(client: TestClient, world: World, clock: FrozenClock) -> None:
    svc = world.services
    forever, _ = svc.tokens.create(world.dev, "Old forever token", ["users.read"])
    csrf = as_admin(client)
    r = client.post(POLICY, data={"max_lifetime_days": "30", "expiration_required": "1", "csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"] == f"{POLICY}?done=policy_saved"
    assert "Token policy saved." in client.get(r.headers["location"]).text
    policy = svc.policies.get(world.tenant_id)
    assert (policy.max_lifetime_days, policy.expiration_required) == (30, True)

    csrf = as_dev(client)
    page = client.get(KEYS).text
    offered = re.findall(r'name="expiry" value="([^"]+)"', page)
    assert offered == ["7", "30", "custom"], "no preset past 30 days, and no 'No expiration'"
    assert 'name="expiry" value="30" checked' in page
    latest = (clock.now() + timedelta(days=30)).date().isoformat()
    message = "Your organisation allows tokens of at most 30 days."
    assert f'max="{latest}" data-max-message="{message}"' in page
    assert "Your organisation's policy: every token must expire, at most 30 days from today." in page
    # The rotate form: the old lifetime (none) is no longer allowed, so it is not offered.
    rotate_form = row_html(page, forever.id)
    assert re.findall(r'<option value="([^"]+)"', rotate_form) == ["7", "30"]
    assert '<option value="30" selected>' in rotate_form

    in_a_year = (clock.now() + timedelta(days=365)).date().isoformat()
    refused = [
        (
            {"expiry": "never"},
            "policy_expiration_required",
            "Your organisation requires every token to expire: pick an expiration date at most 30 days away.",
        ),
        ({"expiry": "custom", "expires_on": in_a_year}, "policy_max_lifetime", message),
        ({"expiry": "90"}, "policy_max_lifetime", message),
    ]
    for fields, code, says in refused:
        r = client.post(KEYS, data={"name": "CI deploy", "scopes": ["users.read"], "csrf_token": csrf, **fields})
        assert r.status_code == 422, fields
        assert shown_error(r.text) == (code, says)
        assert 'value="CI deploy"' in r.text, "the form keeps what was typed"
    r = client.post(f"{KEYS}/{forever.id}/rotate", data={"grace": "0", "lifetime": "same", "csrf_token": csrf})
    assert r.status_code == 422 and shown_error(r.text)[0] == "policy_expiration_required"
    assert [t.name for t in svc.tokens.list(world.dev.user_id or 0)] == ["Old forever token"]

    ok = client.post(
        KEYS,
        data={
            "name": "CI deploy",
            "scopes": ["users.read"],
            "expiry": "custom",
            "expires_on": latest,
            "csrf_token": csrf,
        },
    )
    assert ok.status_code == 303 and full_tokens(client.get(KEYS).text) == 1
    r = client.post(f"{KEYS}/{forever.id}/rotate", data={"grace": "0", "lifetime": "30", "csrf_token": csrf})
    assert r.status_code == 303 and full_tokens(client.get(KEYS).text) == 1


@SQLITE_ONLY
def test_policy_form_saves_and_shows_the_webhook_secret_once(client: TestClient, world: World) -> None:
    svc = world.services
    csrf = as_admin(client)
    r = client.post(
        POLICY,
        data={"auto_revoke_unused_days": "120", "webhook_url": "https://hooks.example.com/kbai", "csrf_token": csrf},
    )
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    secrets_shown = re.findall(r"whsec_[A-Za-z0-9+/]{43}=", r.text)
    assert len(secrets_shown) == 1 and "It will not be shown again" in r.text
    policy = svc.policies.get(world.tenant_id)
    assert (policy.auto_revoke_unused_days, policy.webhook_url, policy.max_lifetime_days) == (
        120,
        "https://hooks.example.com/kbai",
        None,
    )
    again = client.get(POLICY).text
    assert "whsec_" not in again and 'value="https://hooks.example.com/kbai"' in again
    assert 'name="new_webhook_secret"' in again
    # Saving again without asking for a new secret keeps it (nothing shown); asking shows a new one.
    r = client.post(
        POLICY,
        data={"auto_revoke_unused_days": "120", "webhook_url": "https://hooks.example.com/kbai", "csrf_token": csrf},
    )
    assert r.status_code == 303
    r = client.post(
        POLICY, data={"webhook_url": "https://hooks.example.com/kbai", "new_webhook_secret": "1", "csrf_token": csrf}
    )
    assert r.status_code == 200 and len(re.findall(r"whsec_[A-Za-z0-9+/]{43}=", r.text)) == 1
    assert svc.policies.get(world.tenant_id).auto_revoke_unused_days is None, "a blank field removes the rule"


@SQLITE_ONLY
def test_policy_bad_input_is_a_4xx_and_changes_nothing(client: TestClient, world: World) -> None:
    svc = world.services
    csrf = as_admin(client)
    cases = [
        ({"max_lifetime_days": "abc"}, "Maximum lifetime must be a whole number of days"),
        ({"max_lifetime_days": "-5"}, "Maximum lifetime must be a whole number of days"),
        ({"max_lifetime_days": "0"}, "max_lifetime_days must be a whole number of days from 1 to 3650"),
        ({"max_lifetime_days": "9" * 30}, "Maximum lifetime must be a whole number of days"),
        ({"max_lifetime_days": "9" * 50}, "too long or not valid"),
        ({"max_lifetime_days": "999999999"}, "Maximum lifetime must be a whole number of days"),
        ({"auto_revoke_unused_days": "4000"}, "auto_revoke_unused_days must be a whole number of days from 1 to 3650"),
        ({"auto_revoke_unused_days": "1.5"}, "Auto-revoke must be a whole number of days"),
        ({"webhook_url": "javascript:alert(1)"}, "webhook_url must be an http:// or https:// URL"),
        ({"webhook_url": "https:///no-host"}, "webhook_url must be an http:// or https:// URL"),
        ({"max_lifetime_days": "x", "webhook_url": f"https://x.example/{SCRIPT}"}, "Maximum lifetime must be"),
        ({"webhook_url": "ftp://files.example.com/x"}, "webhook_url must be an http:// or https:// URL"),
    ]
    for fields, says in cases:
        r = client.post(POLICY, data={"csrf_token": csrf, **fields})
        assert r.status_code == 422, fields
        code, message = shown_error(r.text)
        assert code == "validation_error" and says in message, (fields, message)
        assert SCRIPT not in r.text
    assert svc.policies.get(world.tenant_id).updated_at is None, "nothing was saved"


# ---- activity -----------------------------------------------------------------------------------
@SQLITE_ONLY
def test_activity_page(client: TestClient, world: World, clock: FrozenClock) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, f"Cron {SCRIPT}", ["users.read"])
    other, _ = svc.tokens.create(world.admin, "Admin script", ["users.read"])
    created = clock.now()  # Thursday 2026-01-01 12:00 UTC
    for day in range(1, 6):  # the first 14 days: weekdays at 09:00-10:00 UTC
        for n in range(3):
            svc.usage.record(view.id, created.replace(hour=9, minute=n) + timedelta(days=day))
    clock.advance(days=20)
    late = clock.now().replace(hour=3, minute=5) - timedelta(days=1)  # after the first 14 days, at 03:00
    svc.usage.record(view.id, late, "203.0.113.7", f"curl/8.5 {SCRIPT}")
    svc.usage.flush()

    as_dev(client)
    keys = client.get(KEYS).text
    assert f'href="{KEYS}/{view.id}/activity"' in row_html(keys, view.id)
    r = client.get(f"{KEYS}/{view.id}/activity")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    svg = re.search(r"<svg [^>]*class=\"kbai-heatmap\".*?</svg>", r.text, re.S)
    assert svg, "the heatmap is inline SVG"
    cells = re.findall(r'<rect [^>]*data-weekday="(\d)" data-hour="(\d+)" data-count="(\d+)"', svg.group(0))
    assert len(cells) == 7 * 24
    counts = {(int(d), int(h)): int(c) for d, h, c in cells if c != "0"}
    expected: dict[tuple[int, int], int] = {}
    for day in range(1, 6):
        when = created + timedelta(days=day)
        expected[(when.weekday(), 9)] = expected.get((when.weekday(), 9), 0) + 3
    expected[(late.weekday(), 3)] = 1
    assert counts == expected
    assert " style=" not in svg.group(0) and "<script" not in svg.group(0)
    assert '<dd data-stat="total">16</dd>' in r.text
    assert "<code>203.0.113.7</code>" in r.text
    assert f"curl/8.5 {html.escape(SCRIPT, quote=False)}" in r.text and SCRIPT not in r.text
    assert "Used outside its usual hours." in r.text
    assert f"{['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'][late.weekday()]} 03:00–04:00 UTC" in r.text

    for token_id, status in ((other.id, 404), (2147483647, 404), ("99999999999999999999", 404), ("x", 404)):
        r = client.get(f"{KEYS}/{token_id}/activity")
        assert r.status_code == status and shown_error(r.text)[0] == "not_found", token_id

    as_admin(client)  # a reviewer sees anyone's token of the tenant, with its owner
    r = client.get(f"{KEYS}/{view.id}/activity")
    assert r.status_code == 200 and "owned by dev@acme.test" in r.text
    assert f'href="{INVENTORY}"' in r.text


@SQLITE_ONLY
def test_activity_before_and_without_usual_hours(client: TestClient, world: World, clock: FrozenClock) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "Fresh", ["users.read"])
    as_dev(client)
    r = client.get(f"{KEYS}/{view.id}/activity").text
    assert "The token is in its first 14 days" in r and "No requests in the last 30 days." in r
    clock.advance(days=15)
    as_dev(client)  # sessions last 8 hours
    r = client.get(f"{KEYS}/{view.id}/activity").text
    assert "The token was not used in its first 14 days, so it has no usual hours." in r


# ---- the admin inventory ------------------------------------------------------------------------
@SQLITE_ONLY
def test_inventory_filters_export_and_revoke(client: TestClient, world: World, clock: FrozenClock) -> None:
    svc = world.services
    stale, _ = svc.tokens.create(world.dev, "Stale sync", ["users.read"])
    clock.advance(days=95)
    soon, _ = svc.tokens.create(world.dev, "Short job", ["users.read"], expires_in_days=3)
    gone, _ = svc.tokens.create(world.dev, "Gone", ["users.read"])
    svc.tokens.revoke(world.dev, gone.id)
    mine, _ = svc.tokens.create(world.admin, "Admin script", ["users.read"])
    csrf = as_admin(client)

    def listed(query: str) -> list[int]:
        page = client.get(f"{INVENTORY}?{query}")
        assert page.status_code == 200, query
        return [int(i) for i in re.findall(r'<tr class="status-[a-z]+" id="token-(\d+)">', page.text)]

    assert listed("") == [mine.id, gone.id, soon.id, stale.id]
    assert listed("owner=dev%40acme.test") == [gone.id, soon.id, stale.id]
    assert listed("owner=DEV%40acme.test&status=active") == [soon.id, stale.id]
    assert listed("status=revoked") == [gone.id]
    assert listed("stale=1") == [stale.id]
    assert listed("expiring_soon=on") == [soon.id]
    assert listed(f"owner={world.admin.user_id}") == [mine.id]
    assert listed("owner=nobody%40acme.test") == []
    page = client.get(f"{INVENTORY}?owner=dev%40acme.test&stale=1").text
    assert 'href="/api/v1/admin/tokens/export?owner=dev%40acme.test&amp;stale=1"' in page
    export = client.get("/api/v1/admin/tokens/export?owner=dev%40acme.test&stale=1")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert len(export.text.strip().splitlines()) == 2 and "Stale sync" in export.text

    for query, says in (
        ("status=bogus", "Pick a status"),
        ("owner=" + "a" * 400, "owner filter"),
        ("owner=a%00b", "owner filter"),
        ("owner=%1b%5B31m", "owner filter"),
        ("cursor=abc", "does not exist"),
        ("cursor=99999999999999999999", "does not exist"),
        (f"owner={SCRIPT}&status={SCRIPT}", "Pick a status"),
    ):
        r = client.get(f"{INVENTORY}?{query}")
        assert r.status_code == 422, query
        code, message = shown_error(r.text)
        assert code == "validation_error" and says in message, query
        assert SCRIPT not in r.text

    # Revoke keeps the filters; the owner is told.
    r = client.post(f"{INVENTORY}/{stale.id}/revoke", data={"csrf_token": csrf, "owner": "dev@acme.test", "stale": "1"})
    assert r.status_code == 303
    assert r.headers["location"] == f"{INVENTORY}?done=admin_revoked&token={stale.id}&owner=dev%40acme.test&stale=1"
    assert (
        f"Token “Stale sync” (<code>{stale.prefix}</code>) of dev@acme.test revoked. It stops working with the "
        "next request; they are told in-app and by email."
    ) in client.get(r.headers["location"]).text
    assert svc.tokens.get(world.dev, stale.id).status == "revoked"
    assert [n.kind for n in svc.notifications.list(world.dev.user_id or 0)] == ["token.revoked_by_admin"]
    for token_id, status in (("2147483647", 404), ("99999999999999999999", 404), ("abc", 404)):
        r = client.post(f"{INVENTORY}/{token_id}/revoke", data={"csrf_token": csrf})
        assert r.status_code == status and shown_error(r.text)[0] == "not_found"


def test_inventory_hides_other_tenants(client: TestClient, world: World) -> None:
    from tests.conftest import build_world

    other = build_world(world.services, "Globex", "globex.test")
    theirs, _ = world.services.tokens.create(other.dev, "Globex sync", ["users.read"])
    csrf = as_admin(client)
    assert "Globex sync" not in client.get(INVENTORY).text
    r = client.post(f"{INVENTORY}/{theirs.id}/revoke", data={"csrf_token": csrf})
    assert r.status_code == 404
    assert client.get(f"{KEYS}/{theirs.id}/activity").status_code == 404
    assert world.services.tokens.get(other.dev, theirs.id).status == "active"


# ---- notifications ------------------------------------------------------------------------------
@SQLITE_ONLY
def test_notifications_list_and_mark_read(client: TestClient, world: World) -> None:
    svc = world.services
    first, _ = svc.tokens.create(world.dev, f"Zapier {SCRIPT}", ["users.read"])
    second, _ = svc.tokens.create(world.dev, "n8n nightly sync", ["users.read"])
    svc.inventory.revoke(world.admin, first.id)
    svc.inventory.revoke(world.admin, second.id)
    admin_token, _ = svc.tokens.create(world.admin, "Admin script", ["users.read"])
    svc.inventory.revoke(world.admin, admin_token.id)  # own token: no notification

    csrf = as_dev(client)
    home = client.get("/system-settings").text
    assert re.search(rf'href="{NOTIFICATIONS}"[^>]*>Notifications <span class="count"[^>]*>2<', home)
    assert "You have 2 unread notifications" in home
    page = client.get(NOTIFICATIONS)
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    ids = [int(i) for i in re.findall(r'id="notification-(\d+)"', page.text)]
    assert len(ids) == 2
    assert (
        f"Your token {first.prefix} (Zapier {html.escape(SCRIPT, quote=False)}) was revoked by admin@acme.test"
        in page.text
    )
    assert SCRIPT not in page.text
    assert page.text.count("Revoked by an admin") == 2 and page.text.count("Mark as read<") == 2

    r = client.post(f"{NOTIFICATIONS}/{ids[0]}/read", data={"csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"] == f"{NOTIFICATIONS}?done=read"
    after = client.get(r.headers["location"]).text
    assert "Marked as read." in after and after.count("Mark as read<") == 1
    assert re.search(rf'href="{NOTIFICATIONS}"[^>]*>Notifications <span class="count"[^>]*>1<', after)

    for bad in ("2147483647", "99999999999999999999", "abc", "0"):
        r = client.post(f"{NOTIFICATIONS}/{bad}/read", data={"csrf_token": csrf})
        assert r.status_code == 404 and shown_error(r.text)[0] == "not_found", bad
    r = client.get(f"{NOTIFICATIONS}?cursor=abc")
    assert r.status_code == 422 and shown_error(r.text)[0] == "validation_error"

    r = client.post(f"{NOTIFICATIONS}/read-all", data={"csrf_token": csrf})
    assert r.status_code == 303
    done = client.get(r.headers["location"]).text
    assert "All notifications marked as read." in done and "Mark as read<" not in done
    assert svc.notifications.unread(world.dev.user_id or 0) == 0

    # Someone else's notification is not found, and stays unread.
    as_admin(client)
    svc.inventory.revoke(world.admin, svc.tokens.create(world.dev, "Third", ["users.read"])[0].id)
    (theirs,) = svc.notifications.list(world.dev.user_id or 0, unread_only=True)
    r = client.post(f"{NOTIFICATIONS}/{theirs.id}/read", data={"csrf_token": csrf_of(client, NOTIFICATIONS)})
    assert r.status_code == 404
    assert svc.notifications.unread(world.dev.user_id or 0) == 1
    assert "No notifications." in client.get(NOTIFICATIONS).text


@SQLITE_ONLY
def test_names_are_escaped_in_the_new_pages(client: TestClient, world: World) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, SCRIPT, ["users.read"])
    csrf = as_dev(client)
    rotated = client.post(f"{KEYS}/{view.id}/rotate", data={"grace": "3600", "lifetime": "same", "csrf_token": csrf})
    assert rotated.status_code == 303
    pages = [
        client.get(rotated.headers["location"]).text,
        client.get(KEYS).text,
        client.get(f"{KEYS}/{view.id}/activity").text,
    ]
    as_admin(client)
    pages += [client.get(INVENTORY).text, client.get(f"{INVENTORY}?owner={SCRIPT}").text]
    for page in pages:
        assert SCRIPT not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"<script(?![^>]*\bsrc=)", "".join(pages)), "no inline script anywhere"
    assert not re.search(r"\sstyle=", "".join(pages)), "no style attribute anywhere (CSP)"
