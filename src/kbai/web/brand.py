"""The product's brand in the pages (KBAI_BRAND_*, KBAI_PRODUCT_URL) and the login options they show.

Every template gets ``brand`` and ``login`` from :func:`page_context` (a Jinja2 context processor), so no
route passes them by hand. The accent colour reaches the pages as a same-origin stylesheet
(``/brand.css``): the CSP keeps ``style-src 'self'`` and no inline style is ever needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response

from kbai.config import Settings

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Brand:
    name: str = "Keebai"
    logo_url: str | None = None
    accent: str | None = None
    product_url: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Brand:
        return cls(settings.brand_name, settings.brand_logo_url, settings.brand_accent, settings.product_url)

    @property
    def initial(self) -> str:
        return self.name[:1].upper()


@dataclass(frozen=True)
class LoginOptions:
    password: bool = True
    oidc_name: str | None = None  # "Sign in with {oidc_name}" when OIDC is configured


def page_context(request: Request) -> dict[str, Any]:
    services = getattr(request.app.state, "services", None)
    if services is None:
        return {"brand": Brand(), "login": LoginOptions()}
    settings = services.settings
    oidc = getattr(services, "oidc", None)
    return {
        "brand": Brand.from_settings(settings),
        "login": LoginOptions(settings.password_login, oidc.provider_name if oidc is not None else None),
    }


def logo_origin(settings: Settings) -> str | None:
    """The origin of the logo URL, for the CSP's img-src (and nothing else)."""
    if not settings.brand_logo_url:
        return None
    parts = urlsplit(settings.brand_logo_url)
    return f"{parts.scheme}://{parts.netloc}"


@router.get("/brand.css")
def brand_css(request: Request) -> Response:
    accent = request.app.state.services.settings.brand_accent
    css = "/* KBAI_BRAND_ACCENT is not set */\n"
    if accent:  # validated at startup: a hex, rgb() or hsl() colour, nothing that could end the rule
        css = (
            f":root {{ --accent: {accent}; --accent-strong: color-mix(in srgb, {accent} 82%, black); "
            f"--accent-soft: color-mix(in srgb, {accent} 9%, white); }}\n"
            f".logo:not(.logo-image) {{ background: {accent}; }}\n"
        )
    return Response(css, media_type="text/css", headers={"Cache-Control": "public, max-age=300"})
