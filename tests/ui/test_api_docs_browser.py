"""/docs (Swagger UI) and /redoc (ReDoc) render in Chromium from kbai's own origin, with no CSP
violation and no request to anywhere else; their relaxed CSP is theirs alone."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Page

from kbai.web.docs import CSP
from kbai.web.middleware import SECURITY_HEADERS
from tests.conftest import LiveServer
from tests.ui.conftest import SCREENSHOTS, new_page

pytestmark = pytest.mark.browser
CSP_WATCH = (
    "window.__csp = []; document.addEventListener('securitypolicyviolation', "
    "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
)
DEFAULT_CSP = dict(SECURITY_HEADERS)[b"content-security-policy"].decode()


@pytest.fixture
def backend() -> str:
    return "sqlite"


def _viewport_shot(page: Page, name: str) -> None:
    """What a visitor first sees (the documents are thousands of pixels long)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def _open(browser: object, server: LiveServer, path: str) -> tuple[Page, list[str], list[str]]:
    page: Page = new_page(browser, server)
    page.add_init_script(CSP_WATCH)
    elsewhere: list[str] = []
    console_errors: list[str] = []
    origin = urlsplit(server.url).netloc
    page.on(
        "request",
        lambda r: (
            None
            if urlsplit(r.url).scheme in ("data", "blob") or urlsplit(r.url).netloc == origin
            else elsewhere.append(r.url)
        ),
    )
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    response = page.goto(path)
    assert response is not None and response.status == 200
    return page, elsewhere, console_errors


def test_swagger_ui_renders_without_csp_violations(browser: object, ui_server: LiveServer) -> None:
    page, elsewhere, console_errors = _open(browser, ui_server, "/docs")
    # Rendered from the OpenAPI document: the operations and their summaries are on the page.
    # Generous: the first load parses a 1.5 MB bundle and has the server build the whole document.
    page.locator(".opblock-summary-description", has_text="Create a token").first.wait_for(timeout=60_000)
    assert page.locator(".opblock").count() > 20
    page.locator(".opblock-summary", has_text="Create a token").first.click()  # expanding works too
    page.locator(".opblock-body").first.wait_for()
    _viewport_shot(page, "api-docs-swagger")
    assert page.evaluate("window.__csp") == [], "Swagger UI breaks no CSP directive"
    assert not [e for e in console_errors if "Content Security Policy" in e], console_errors
    assert elsewhere == [], "everything comes from kbai itself"


def test_redoc_renders_without_csp_violations(browser: object, ui_server: LiveServer) -> None:
    page, elsewhere, console_errors = _open(browser, ui_server, "/redoc")
    page.get_by_role("heading", name="Create a token").first.wait_for(timeout=60_000)
    page.locator("[role=search] input, input[placeholder='Search...']").first.fill("rotate")  # the worker search
    page.locator("[role=search] li, [data-role='search:results'] li", has_text="Rotate").first.wait_for()
    _viewport_shot(page, "api-docs-redoc")
    assert page.evaluate("window.__csp") == [], "ReDoc breaks no CSP directive"
    assert not [e for e in console_errors if "Content Security Policy" in e], console_errors
    assert elsewhere == [], "everything comes from kbai itself"


def test_the_docs_csp_is_only_on_the_docs_pages(ui_server: LiveServer) -> None:
    with httpx.Client(base_url=ui_server.url) as client:
        assert client.get("/docs").headers["content-security-policy"] == CSP["swagger"]
        assert client.get("/redoc").headers["content-security-policy"] == CSP["redoc"]
        for path in (
            "/login",
            "/openapi.json",
            "/healthz",
            "/docs/assets/swagger-ui-bundle.js",
            "/docs/nothing-here",
            "/redocs",
        ):
            response = client.get(path)
            assert response.headers.get_list("content-security-policy") == [DEFAULT_CSP], path
        # The assets are the package's, not a copy kept in this repository.
        bundle = client.get("/docs/assets/swagger-ui-bundle.js")
        assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text[:200_000]
