"""Accessibility, measured in Debian's Chromium against a real `kbai serve` (SQLite):

- axe-core (from the npm registry, pinned in tests/ui/package-lock.json, installed by
  ``scripts/setup.sh --test``) runs on every page a developer, an admin and a visitor can open, in the
  states that matter (a form error, a token just created, an open dialog), at desktop and phone width:
  no serious or critical violation;
- contrast ratios computed from the rendered colours (WCAG 2.2): focus indicators and form-field borders
  at least 3:1 against what is around them, muted small text at least 4.5:1 on every surface it sits on.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbai.access.requests import AdminRequests
from kbai.services import Services
from kbai.web import pages
from tests.conftest import LiveServer, missing_service
from tests.ui.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    DESKTOP,
    DEV_EMAIL,
    DEV_PASSWORD,
    PHONE,
    login,
    seed_acme,
    user_actor,
)

pytestmark = pytest.mark.browser
AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")
KEYS = "/system-settings/api-keys"


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.is_file():
        missing_service("axe-core (run ./scripts/setup.sh --test, which runs npm ci in tests/ui)")
    return AXE.read_text(encoding="utf-8")


def _page(browser: object, server: LiveServer, viewport: dict[str, int]):
    # axe is injected as a script; the pages' CSP (scripts from 'self' only) would refuse it, so the test's
    # own context bypasses CSP. The pages' scripts are the same either way.
    context = browser.new_context(base_url=server.url, viewport=viewport, bypass_csp=True)  # type: ignore[attr-defined]
    context.set_default_timeout(10_000)
    return context.new_page()


def _violations(page, axe_source: str) -> list[str]:
    """Serious and critical axe violations of the page as it is now: "rule (impact): selectors" (never HTML,
    which may hold a token)."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=axe_source)
    results = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact,
                                       targets: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}));
    }""")
    return [f"{v['id']} ({v['impact']}): {', '.join(v['targets'])}" for v in results if v["impact"] in BLOCKING]


def _get_paths(ids: dict[str, int]) -> list[str]:
    """Every GET page route, with ids filled in (the route table decides; a new page is checked too)."""
    out = []

    for route in pages.router.routes:
        if "GET" not in getattr(route, "methods", ()) or route.path in ("/", "/logout"):
            continue
        path = route.path
        for name, value in ids.items():
            path = path.replace("{" + name + "}", str(value))
        out.append(path)
    return out


@pytest.fixture
def seeded(ui_services: Services) -> Iterator[dict[str, int]]:
    acme = seed_acme(ui_services, ("developer.manage_tokens", "users.read", "roles.read"))
    dev = user_actor(ui_services, DEV_EMAIL)
    admin_user = ui_services.access.user_by_email(ADMIN_EMAIL)
    assert admin_user is not None
    with ui_services.db.read() as s:
        admin = dataclasses.replace(
            user_actor(ui_services, ADMIN_EMAIL), permissions=ui_services.access.permissions(s, admin_user)
        )
    view, _ = ui_services.tokens.create(dev, "Zapier production", ["users.read", "roles.read"], expires_in_days=90)
    ui_services.tokens.rotate(dev, view.id, 86400)
    gone, _ = ui_services.tokens.create(dev, "Old script", ["users.read"])
    ui_services.inventory.revoke(admin, gone.id)  # dev gets a notification
    ui_services.tokens.create(admin, "Audit export", ["audit.read"], expires_in_days=30)
    ui_services.tokens.create_service(admin, "Billing sync", ["users.read"], expires_in_days=90)
    member = user_actor(ui_services, "ops@acme.test")
    AdminRequests(ui_services.access).ask(member, "developer.manage_tokens", "For our Zapier integration")
    yield {"role_id": acme.role_id, "token_id": view.id, "user_id": acme.dev_id}


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_every_page_has_no_serious_or_critical_axe_violation(
    browser: object, ui_server: LiveServer, seeded: dict[str, int], axe_source: str, viewport: dict[str, int]
) -> None:
    found: dict[str, list[str]] = {}
    checked: list[str] = []

    anon = _page(browser, ui_server, viewport)
    for path, label in (("/login", "login"), ("/login?next=/system-settings/api-keys", "login with next")):
        anon.goto(path)
        found[label] = _violations(anon, axe_source)
        checked.append(label)
    anon.get_by_label("Email").fill(DEV_EMAIL)
    anon.get_by_label("Password").fill("wrong-password")
    anon.get_by_role("button", name="Log in").click()
    anon.get_by_role("alert").wait_for()
    found["login error"] = _violations(anon, axe_source)
    anon.context.close()

    for who, password in (
        (DEV_EMAIL, DEV_PASSWORD),
        (ADMIN_EMAIL, ADMIN_PASSWORD),
        ("ops@acme.test", "ops-password-1"),
    ):
        page = _page(browser, ui_server, viewport)
        login(page, who, password)
        for path in _get_paths(seeded):
            page.goto(path)
            found[f"{who} {path}"] = _violations(page, axe_source)
            checked.append(path)
        page.goto("/system-settings/roles/2147483647")  # the error page (a role that does not exist)
        found[f"{who} error page"] = _violations(page, axe_source)
        page.context.close()

    # The states in between: a form error under its field, a token just shown, the dialogs open.
    page = _page(browser, ui_server, viewport)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto(KEYS)
    page.get_by_label("Name").fill("Zapier production")
    page.get_by_label("View users").check()
    page.get_by_role("button", name="Create token").click()
    page.locator("#token-name-error").wait_for()
    found["field error"] = _violations(page, axe_source)
    page.get_by_label("Name").fill("Local dev")
    page.get_by_role("button", name="Create token").click()
    page.locator("#new-token").wait_for()
    found["token created"] = _violations(page, axe_source)
    page.get_by_role("button", name=re.compile("^Rotate")).first.click()
    page.locator("dialog[open]").wait_for()
    found["rotate dialog"] = _violations(page, axe_source)
    page.keyboard.press("Escape")
    page.get_by_role("button", name=re.compile("^Revoke")).first.click()
    page.locator("dialog#confirm-dialog[open]").wait_for()
    found["revoke dialog"] = _violations(page, axe_source)
    page.context.close()

    # Service tokens: the form with an error under its field, the token just shown, the deactivation step.
    page = _page(browser, ui_server, viewport)
    login(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.goto(KEYS + "/service-tokens/new")
    page.get_by_label("Name").fill("Status page")
    page.get_by_role("button", name="Create service token").click()
    page.locator("#scopes-error").wait_for()
    found["service token field error"] = _violations(page, axe_source)
    page.get_by_label("View users").check()
    page.get_by_role("button", name="Create service token").click()
    page.locator("#new-token").wait_for()
    found["service token created"] = _violations(page, axe_source)
    page.locator("table.service-tokens-table").get_by_role("button", name=re.compile("^Revoke")).first.click()
    page.locator("dialog#confirm-dialog[open]").wait_for()
    found["service revoke dialog"] = _violations(page, axe_source)
    page.keyboard.press("Escape")
    page.goto(f"/system-settings/users/{seeded['user_id']}/deactivate")
    page.get_by_label(re.compile("^What happens to")).first.select_option(label="Keep as a service token")
    found["deactivation step, a token kept"] = _violations(page, axe_source)
    page.context.close()

    assert {p for p in checked} >= {
        KEYS,
        "/system-settings",
        "/system-settings/roles",
        "/system-settings/users",
        "/system-settings/tokens",
        "/system-settings/notifications",
        "/system-settings/provisioning",
        "/system-settings/token-policy",
        f"{KEYS}/{seeded['token_id']}/activity",
        f"{KEYS}/service-tokens/new",
        f"/system-settings/users/{seeded['user_id']}/deactivate",
    }
    bad = {where: v for where, v in found.items() if v}
    assert not bad, "axe found serious or critical violations:\n" + "\n".join(
        f"{where}: {'; '.join(v)}" for where, v in bad.items()
    )


# ---- contrast, computed from what Chromium renders -------------------------------------------------
def _rgb(value: str) -> tuple[float, float, float, float]:
    nums = [float(n) for n in re.findall(r"[\d.]+", value)]
    return (nums[0], nums[1], nums[2], nums[3] if len(nums) > 3 else 1.0)


def _over(fg: tuple[float, float, float, float], bg: tuple[float, float, float, float]) -> tuple[float, ...]:
    a = fg[3]
    return tuple(fg[i] * a + bg[i] * (1 - a) for i in range(3))


def _luminance(rgb: tuple[float, ...]) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_contrast_computation_matches_wcag_reference_values() -> None:
    assert round(contrast((0, 0, 0), (255, 255, 255)), 2) == 21.0
    assert round(contrast((0x6B, 0x75, 0x87), (0xF6, 0xF7, 0xF9)), 2) == 4.33  # the measured muted text
    assert round(contrast((0x77, 0x77, 0x77), (255, 255, 255)), 2) == 4.48


# Where things are drawn, and what they are drawn on (the effective background walks up to an opaque one).
EFFECTIVE_BG = """el => { let e = el; while (e) { const c = getComputedStyle(e).backgroundColor;
  if (c && !c.endsWith(', 0)') && c !== 'transparent') return c; e = e.parentElement; } return 'rgb(255, 255, 255)'; }"""


def test_focus_indicators_field_borders_and_muted_text_have_enough_contrast(
    browser: object, ui_server: LiveServer, seeded: dict[str, int]
) -> None:
    page = _page(browser, ui_server, DESKTOP)
    login(page, DEV_EMAIL, DEV_PASSWORD)
    page.goto(KEYS)
    problems: list[str] = []

    def bg_of(locator) -> tuple[float, ...]:
        return _over(_rgb(locator.evaluate(EFFECTIVE_BG)), (255, 255, 255, 1))

    # Focus indicators: keyboard focus (Tab) on a field, a button, a link, an expiration card, a checkbox.
    targets = {
        "name field": page.get_by_label("Name"),
        "scope checkbox": page.get_by_label("View users"),
        "expiration card": page.get_by_role("radio", name=re.compile(r"^90 days")),
        "create button": page.get_by_role("button", name="Create token"),
        "activity link": page.get_by_role("link", name=re.compile("^Activity")).first,
    }
    for what, target in targets.items():
        target.focus()
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("Tab")  # keyboard focus, so :focus-visible applies
        assert target.evaluate("e => e === document.activeElement"), what
        drawn = target
        if what == "expiration card":  # the ring is drawn on the card next to the hidden radio
            drawn = target.locator("xpath=following-sibling::span[1]")
        style = drawn.evaluate(
            "e => { const s = getComputedStyle(e); return [s.outlineStyle, s.outlineWidth, s.outlineColor]; }"
        )
        if style[0] == "none" or float(style[1].rstrip("px") or 0) < 2:
            problems.append(f"{what}: no 2px focus outline ({style})")
            continue
        ratio = contrast(_over(_rgb(style[2]), (255, 255, 255, 1)), bg_of(drawn.locator("xpath=..")))
        if ratio < 3:
            problems.append(f"{what}: focus outline {ratio:.2f}:1")

    # Form-field borders against the surface they sit on.
    for what, field in {
        "name field": page.get_by_label("Name"),
        "expiration card": page.locator(".choice-text").first,
    }.items():
        page.mouse.click(1, 1)  # nothing focused: the resting border
        color = _over(_rgb(field.evaluate("e => getComputedStyle(e).borderTopColor")), (255, 255, 255, 1))
        ratio = contrast(color, bg_of(field.locator("xpath=..")))
        if ratio < 3:
            problems.append(f"{what}: border {ratio:.2f}:1")

    # Muted small text wherever it is: on the page, panels, soft fills (every .muted, .hint and similar).
    for path in (KEYS, "/system-settings", "/system-settings/notifications", "/system-settings/roles"):
        page.goto(path)
        measured = page.evaluate(
            """([bgScript]) => {
            const bgOf = eval(bgScript);
            const out = [];
            document.querySelectorAll('.muted, .hint, .choice-sub, .time-of-day, .breadcrumbs a, .table th, caption, .check-text code').forEach(e => {
              if (!e.offsetParent || !e.textContent.trim()) return;
              out.push([e.className || e.tagName, getComputedStyle(e).color, bgOf(e)]);
            });
            return out;
        }""",
            [EFFECTIVE_BG],
        )
        assert measured, path
        for cls, color, background in measured:
            ratio = contrast(_over(_rgb(color), _rgb(background)), _over(_rgb(background), (255, 255, 255, 1)))
            if ratio < 4.5:
                problems.append(f"{path} {cls}: text {ratio:.2f}:1")
    page.context.close()
    assert not problems, "\n".join(sorted(set(problems)))
