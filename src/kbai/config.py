"""Settings: the only module that reads ``KBAI_*`` environment variables."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_WORKERS = 64


class Settings(BaseSettings):
    """Every knob an operator can turn. Each field is read from ``KBAI_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="KBAI_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./kbai.db",
        description="SQLAlchemy URL. sqlite:///path (default ./kbai.db) or postgresql://user@host/db.",
    )
    redis_url: str | None = Field(
        default=None,
        description="redis://host:port/db. Pushes revocations and permission changes to every instance "
        "(pub/sub) and shares the failure counts. Unset: the database pushes them (PostgreSQL LISTEN/NOTIFY, "
        "or a table SQLite processes poll) and each instance counts its own failures.",
    )
    redis_prefix: str = Field(
        default="kbai", description="Prefix of every Redis key and channel (lets several deployments share a Redis)."
    )
    cache_ttl_seconds: float = Field(
        default=1.0,
        ge=0,
        description="In a process that does not listen for invalidations (the CLI, an SDK "
        "verifier used without its lifespan): longest a cached verification is reused. 0 turns the cache off "
        "everywhere.",
    )
    cache_max_age_seconds: float = Field(
        default=300.0,
        ge=0,
        description="While this process listens for invalidations (always, in `kbai serve`): "
        "longest a cached verification is kept. Changes are pushed to every process at once, so this is only a "
        "safety net.",
    )
    negative_cache_seconds: float = Field(
        default=30.0,
        ge=0,
        description="How long an unknown (well-formed) token is remembered as unknown.",
    )
    permissions_file: Path | None = Field(
        default=None,
        description="TOML file with the operator's own permission groups, added to the built-in catalog.",
    )
    default_max_active_tokens: int = Field(
        default=10, ge=1, le=100_000, description="Active tokens a user may hold unless overridden."
    )
    default_max_service_tokens: int = Field(
        default=25,
        ge=1,
        le=100_000,
        description="Active service tokens a tenant may hold unless `kbai limits set --max-service-tokens` says otherwise.",
    )
    support_email: str = Field(default="support@keebai.com", description="Shown in the limit message.")
    last_used_flush_seconds: float = Field(
        default=60.0, gt=0, description="Longest a Last used time may lag behind the real use."
    )
    session_ttl_seconds: int = Field(default=8 * 3600, ge=60, description="Lifetime of a login session.")
    cookie_secure: bool = Field(
        default=False, description="Mark the session cookie Secure (set it when serving over HTTPS)."
    )
    auth_failures_per_minute: int = Field(
        default=60, ge=1, description="Failed token authentications allowed per client IP per minute."
    )
    login_failures_per_minute: int = Field(
        default=10,
        ge=1,
        description="Failed logins allowed per client address per minute (any emails); past "
        "that, that address alone is refused until the minute is over.",
    )
    login_account_failures_per_day: int = Field(
        default=20,
        ge=1,
        description="Failed logins for one email in a day, from any addresses, before addresses "
        "it has not signed in from (in 30 days) must wait between attempts. Its own addresses never wait.",
    )
    login_account_max_delay_seconds: int = Field(
        default=300,
        ge=1,
        le=86400,
        description="Longest wait between two attempts of such an address: the wait "
        "starts at 2 s and doubles with each further failure up to this.",
    )
    introspection_failures_per_minute: int = Field(
        default=10,
        ge=1,
        description="Failed service-credential authentications at POST /api/v1/introspect "
        "allowed per client address per minute.",
    )
    trusted_proxies: str = Field(
        default="127.0.0.1,::1",
        description="Comma-separated proxy addresses whose X-Forwarded-For is believed for the client IP.",
    )
    argon2_time_cost: int = Field(default=3, ge=1, description="argon2id iterations (RFC 9106 low-memory profile).")
    argon2_memory_kib: int = Field(default=65536, ge=8, description="argon2id memory in KiB.")
    argon2_parallelism: int = Field(default=4, ge=1, description="argon2id lanes.")
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest request body accepted.")
    secret_scanning_keys_file: Path | None = Field(
        default=None,
        description='JSON file with GitHub\'s secret-scanning public keys ({"public_keys": [{"key_identifier", '
        '"key", "is_current"}]}, as GitHub publishes them). POST /api/v1/secret-scanning/github accepts '
        "reports signed by these keys; unset, it refuses every report. Re-read when the file changes.",
    )
    public_revocations_per_minute: int = Field(
        default=10, ge=1, description="Requests to POST /api/v1/credentials/revoke allowed per client IP per minute."
    )
    smtp_host: str | None = Field(
        default=None,
        description="SMTP server for email (expiry reminders, revocation notices). Unset: no email; "
        "in-app notifications still work.",
    )
    smtp_port: int = Field(default=25, ge=1, le=65535, description="SMTP port (587 with STARTTLS, 25 plain).")
    smtp_from: str = Field(default="no-reply@keebai.com", max_length=320, description="From address of every email.")
    smtp_username: str | None = Field(default=None, description="SMTP login, when the server wants one.")
    smtp_password: str | None = Field(default=None, repr=False, description="SMTP password (never logged).")
    smtp_starttls: bool = Field(default=False, description="Upgrade the SMTP connection with STARTTLS.")
    webhook_allowed_networks: str = Field(
        default="",
        description="Comma-separated networks (CIDRs or single addresses, e.g. 10.20.0.0/16,127.0.0.1) that webhook "
        "URLs may reach although they are not public: loopback, private, link-local, carrier-grade NAT, unique-local "
        "IPv6. Empty (default): webhooks go to public internet addresses only. Cloud metadata host names "
        "(metadata.google.internal, ...), 0.0.0.0 and multicast are refused whatever this says.",
    )
    outbound_deadline_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Hard limit on the whole of one outbound call (a webhook POST from "
        "its DNS lookup to the answer's status line; one SMTP conversation), however slowly the other side answers.",
    )
    encryption_key: str | None = Field(
        default=None,
        repr=False,
        description="Fernet key that encrypts webhook signing secrets in the database; several comma-separated "
        'keys rotate (the first encrypts, every one decrypts). Generate one with `python -c "from '
        'cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`. Unset: with SQLite, a key '
        "file beside the database (`<database file>.key`, mode 0600) is made on first use; with PostgreSQL, "
        "webhooks cannot be set up until it is set (every instance and worker needs the same key).",
    )
    operator_tenant: str | None = Field(
        default=None,
        max_length=100,
        description="The tenant of the deployment's own operators: its admins (a session holding every permission "
        "there) may list and revoke service credentials in the API. Unset: only the CLI may.",
    )
    worker_interval_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How often `kbai worker` looks for due reminders and unused tokens.",
    )
    fake_now: datetime | None = Field(
        default=None,
        description="TEST ONLY: an ISO 8601 time with a zone; the process's clock is frozen there. "
        "Never set it in production.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=MAX_WORKERS,
        description="Processes `kbai serve` runs on its one port (uvicorn "
        "workers); `kbai serve --workers N` overrides it. Changes made through any of them reach all within 1 s.",
    )
    access_log_token_reads: bool = Field(
        default=False,
        description="Also write an access-log line for every successful read-only request "
        "authenticated by a token: /auth/check answers 200 and GET/HEAD API calls with a Bearer token. They "
        "are always counted (metrics, Last used, hourly counts); failures, session requests and every write "
        "are always logged.",
    )
    # ---- sign-in with the host product's OpenID provider (docs/integration.md) -------------------
    oidc_issuer: str | None = Field(
        default=None,
        description="Issuer URL of the product's OpenID provider (discovery at "
        "ISSUER/.well-known/openid-configuration). https://, or http:// on a loopback address only. Unset: no OIDC.",
    )
    oidc_client_id: str | None = Field(default=None, description="Client id registered for kbai at the provider.")
    oidc_client_secret: str | None = Field(
        default=None,
        repr=False,
        description="Client secret (sent with client_secret_basic; never logged).",
    )
    oidc_provider_name: str = Field(
        default="SSO",
        min_length=1,
        max_length=60,
        description='The button label: "Sign in with {name}".',
    )
    oidc_tenant_claim: str = Field(
        default="org_id",
        min_length=1,
        max_length=200,
        description="ID token claim naming the person's organisation: the external id of their kbai tenant.",
    )
    oidc_roles_claim: str = Field(
        default="roles",
        min_length=1,
        max_length=200,
        description="ID token claim with role names; when present, the person's roles are set to exactly those.",
    )
    oidc_external_id_claim: str = Field(
        default="sub",
        min_length=1,
        max_length=200,
        description="Claim matched against users' external_id to link a first sign-in to an existing user.",
    )
    oidc_create_tenants: bool = Field(
        default=False,
        description="Create a tenant on the first sign-in of an organisation kbai does not know.",
    )
    oidc_scopes: str = Field(
        default="",
        max_length=500,
        description="Scopes asked for besides `openid email profile` (space-separated).",
    )
    password_login: bool = Field(
        default=True,
        description="Allow logging in with an email and password (the form and POST /api/v1/session).",
    )
    # ---- brand (pages in the product's colours) -------------------------------------------------
    brand_name: str = Field(default="Keebai", min_length=1, max_length=60, description="Product name in the pages.")
    brand_logo_url: str | None = Field(
        default=None,
        max_length=2000,
        description="https:// URL of a logo shown in the header (its origin is added to the CSP's img-src only).",
    )
    brand_accent: str | None = Field(
        default=None,
        max_length=40,
        description="Accent colour of buttons and links: #rgb, #rrggbb, rgb(...) or hsl(...).",
    )
    product_url: str | None = Field(
        default=None,
        max_length=2000,
        description='http(s) URL of the product: a "Back to {brand}" link in the header.',
    )
    # ---- serving under the product's address (docs/integration.md) ---------------------------------
    public_url: str | None = Field(
        default=None,
        max_length=2000,
        description="The address people reach kbai at, e.g. "
        "https://app.example.com/kbai. Its path (when it has one) prefixes every route, link, redirect, cookie "
        "and static asset, and kbai answers under that path itself (the proxy forwards paths unchanged); "
        "/healthz, /livez, /readyz and /metrics answer at the root too. Also the base of the OIDC redirect URI, "
        "links in emails and the OpenAPI `servers` entry. Unset or without a path: everything at the root.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="DEBUG, INFO, WARNING or ERROR. Logs are JSON lines on stderr, tokens redacted."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("fake_now")
    @classmethod
    def _zoned(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("KBAI_FAKE_NOW needs a zone, e.g. 2027-01-01T12:00:00Z")
        return value

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        import ipaddress

        for item in (part.strip() for part in value.split(",")):
            if item:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"{item[:60]!r} is not a network (e.g. 10.0.0.0/8) or an IP address") from None
        return value

    @field_validator("encryption_key")
    @classmethod
    def _fernet_keys(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from cryptography.fernet import Fernet

        for item in (part.strip() for part in value.split(",")):
            try:
                Fernet(item.encode())
            except ValueError:
                raise ValueError("each key must be 32 url-safe base64-encoded bytes (a Fernet key)") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql", "postgres://")):
            raise ValueError("KBAI_DATABASE_URL must start with sqlite:// or postgresql://")
        return value

    @field_validator(
        "oidc_issuer",
        "oidc_client_id",
        "oidc_client_secret",
        "brand_logo_url",
        "product_url",
        "brand_accent",
        "public_url",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("oidc_issuer")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        if value is not None and not secure_url(value):
            raise ValueError("KBAI_OIDC_ISSUER must be an https:// URL (http:// only on 127.0.0.1, ::1 or localhost)")
        return value

    @field_validator("oidc_scopes")
    @classmethod
    def _scopes(cls, value: str) -> str:
        if any(not _SCOPE.fullmatch(s) for s in value.replace(",", " ").split()):
            raise ValueError("KBAI_OIDC_SCOPES must be scope names separated by spaces")
        return value

    @field_validator("brand_logo_url")
    @classmethod
    def _logo(cls, value: str | None) -> str | None:
        netloc = urlsplit(value or "").netloc
        if value is not None and (
            not secure_url(value)
            or not value.isascii()
            or not re.fullmatch(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::\d{1,5})?", netloc)
        ):
            raise ValueError("KBAI_BRAND_LOGO_URL must be an https:// URL (http:// only on a loopback address)")
        return value

    @field_validator("product_url")
    @classmethod
    def _product(cls, value: str | None) -> str | None:
        parts = urlsplit(value or "")
        if value is not None and (parts.scheme not in ("http", "https") or not parts.netloc or '"' in value):
            raise ValueError("KBAI_PRODUCT_URL must be an http:// or https:// URL")
        return value

    @field_validator("public_url")
    @classmethod
    def _public(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            parts = None
        path = parts.path.rstrip("/") if parts else ""
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.username
            or parts.password
            or parts.query
            or parts.fragment
            or "?" in value
            or "#" in value
            or not re.fullmatch(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::\d{1,5})?", parts.netloc)
            or any(not _SEGMENT.fullmatch(seg) or seg in (".", "..") for seg in path.split("/")[1:])
        ):
            raise ValueError(
                "KBAI_PUBLIC_URL must be an http:// or https:// URL with an optional path of plain "
                "segments (letters, digits, - . _ ~) and no query, e.g. https://app.example.com/kbai"
            )
        return f"{parts.scheme}://{parts.netloc}{path}"

    @property
    def path_prefix(self) -> str:
        """The path of KBAI_PUBLIC_URL without its trailing slash ("/kbai"), or "" to serve at the root."""
        return urlsplit(self.public_url).path if self.public_url else ""

    @field_validator("brand_accent")
    @classmethod
    def _accent(cls, value: str | None) -> str | None:
        if value is not None and not any(p.fullmatch(value.strip().lower()) for p in _COLOURS):
            raise ValueError(
                "KBAI_BRAND_ACCENT must be a CSS colour: #rgb, #rrggbb, #rrggbbaa, rgb(r, g, b) or "
                "hsl(h, s%, l%), e.g. #0b5fff"
            )
        return value.strip().lower() if value else value

    @model_validator(mode="after")
    def _oidc_complete(self) -> Settings:
        given = [self.oidc_issuer, self.oidc_client_id, self.oidc_client_secret]
        if any(given) and not all(given):
            raise ValueError(
                "OIDC sign-in needs all three of KBAI_OIDC_ISSUER, KBAI_OIDC_CLIENT_ID and KBAI_OIDC_CLIENT_SECRET"
            )
        return self

    @property
    def oidc_enabled(self) -> bool:
        return self.oidc_issuer is not None


_SEGMENT = re.compile(r"[A-Za-z0-9._~-]{1,100}")  # one segment of KBAI_PUBLIC_URL's path
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,100}")  # RFC 6749 scope-token
_COLOURS = (
    re.compile(r"#(?:[0-9a-f]{3}|[0-9a-f]{4}|[0-9a-f]{6}|[0-9a-f]{8})"),
    re.compile(r"rgba?\(\s*\d{1,3}%?\s*,\s*\d{1,3}%?\s*,\s*\d{1,3}%?\s*(?:,\s*(?:0|1|0?\.\d+))?\s*\)"),
    re.compile(r"hsla?\(\s*\d{1,3}(?:deg)?\s*,\s*\d{1,3}%\s*,\s*\d{1,3}%\s*(?:,\s*(?:0|1|0?\.\d+))?\s*\)"),
)


def loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def secure_url(url: str) -> bool:
    """An https:// URL with a host, or an http:// one on a loopback address (local development, tests)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return False
    if not host or any(ord(c) < 0x21 or c in '"<>\\' for c in url):
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and loopback_host(host))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
