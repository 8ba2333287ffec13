"""A real OpenID Provider for the tests: the certified ``oidc-provider`` npm package, run with Node.

``scripts/setup.sh --test`` installs it (``npm ci`` in ``tests/identity/provider``). :class:`OidcProvider`
starts ``server.js`` on a free loopback port with RSA signing keys made here, and writes the state file the
provider reads on every use: registered clients, accounts (password and claims) and the failure knobs.
Tests change accounts and knobs between sign-ins, rotate keys with :meth:`restart` and stop the provider
for "provider unreachable". :func:`sign_in` walks a flow through the provider's own login form over HTTP,
the way a browser would (the browser tests use Chromium instead).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
from joserfc.jwk import RSAKey

PROVIDER_DIR = Path(__file__).with_name("provider")
CLIENT_ID, CLIENT_SECRET = "kbai-tests", "kbai-tests-client-secret-0123456789"


def provider_missing() -> str | None:
    """Why the provider cannot run here (None: it can)."""
    if shutil.which("node") is None:
        return "Node.js (node) for the test OpenID provider"
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        return "the oidc-provider npm package (run ./scripts/setup.sh --test)"
    return None


def make_key(kid: str) -> dict[str, Any]:
    key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})
    return dict(key.as_dict(private=True))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OidcProvider:
    folder: Path
    name: str = "Test Identity"
    port: int = field(default_factory=free_port)
    keys: list[dict[str, Any]] = field(default_factory=lambda: [make_key("key-1"), make_key("key-2")])
    state: dict[str, Any] = field(default_factory=lambda: {"clients": [], "accounts": {}})
    process: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / f"oidc-provider-{self.port}.log"

    # ---- what the provider knows -----------------------------------------------------------
    def add_client(self, redirect_uri: str, client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> None:
        clients = [c for c in self.state["clients"] if c["client_id"] != client_id]
        existing = next((c for c in self.state["clients"] if c["client_id"] == client_id), None)
        uris = sorted({*(existing or {}).get("redirect_uris", []), redirect_uri})
        clients.append(
            {
                "client_id": client_id,
                "client_secret": secret,
                "client_name": "kbai",
                "redirect_uris": uris,
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            }
        )
        self.state["clients"] = clients
        self.save()

    def set_account(self, login: str, password: str, *, sub: str | None = None, **claims: Any) -> None:
        """An account at the provider; ``claims`` go into its ID tokens (email, org_id, roles...)."""
        self.state["accounts"][login] = {"password": password, "sub": sub or f"sub-{login}", "claims": claims}
        self.save()

    def knobs(self, **values: Any) -> None:
        """Failure knobs: ``hidden_kids`` (keys left out of /jwks), ``id_token_ttl`` (seconds),
        ``id_token_client`` (issue ID tokens for that other registered client). ``None`` clears one."""
        for k, v in values.items():
            if v is None:
                self.state.pop(k, None)
            else:
                self.state[k] = v
        self.save()

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / "state.json.tmp"
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.folder / "state.json")

    def stats(self) -> dict[str, int]:
        return dict(httpx.get(self.issuer + "/_test/stats", timeout=5).json())

    # ---- running it ---------------------------------------------------------------------------
    def start(self) -> OidcProvider:
        self.save()
        config = {
            "issuer": self.issuer,
            "port": self.port,
            "keys": self.keys,
            "name": self.name,
            "cookie_key": secrets.token_hex(16),
            "state_file": str(self.folder / "state.json"),
        }
        config_file = self.folder / f"provider-{self.port}.json"
        config_file.write_text(json.dumps(config))
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                ["node", "server.js", str(config_file)],
                cwd=PROVIDER_DIR,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"oidc-provider exited with {self.process.returncode}: {self.log.read_text()[-2000:]}"
                )
            try:
                if httpx.get(self.issuer + "/.well-known/openid-configuration", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"oidc-provider did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self, keys: list[dict[str, Any]] | None = None) -> None:
        """Stop and start again on the same port (sessions and codes at the provider are forgotten)."""
        self.stop()
        if keys is not None:
            self.keys = keys
        self.start()


# ---- walking a sign-in through the provider's login page, as a browser would ----------------------
@dataclass
class Landing:
    """Where the provider sent the browser back: the callback URL (code, state, iss) or an error."""

    url: str

    @property
    def path_and_query(self) -> str:
        parts = urlsplit(self.url)
        return parts.path + ("?" + parts.query if parts.query else "")

    @property
    def params(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.url).query).items()}


def login_at_provider(
    authorization_url: str, login: str, password: str, browser: httpx.Client | None = None
) -> Landing:
    """Open the authorization URL, fill the provider's login form, return where it redirects back to.

    ``browser`` keeps the provider's cookies between calls (a second sign-in skips the form when the
    provider session is still there)."""
    own = browser is None
    client = browser or httpx.Client(timeout=10)
    try:
        url = authorization_url
        origin = urlsplit(authorization_url).netloc
        for _ in range(20):
            r = client.get(url)
            if r.status_code in (302, 303):
                nxt = urljoin(url, r.headers["location"])
                if urlsplit(nxt).netloc != origin:
                    return Landing(nxt)
                url = nxt
                continue
            form = re.search(r'<form method="post" action="([^"]+)"', r.text)
            assert r.status_code == 200 and form, f"no login form at the provider: {r.status_code} {r.text[:300]}"
            r = client.post(urljoin(url, unescape(form.group(1))), data={"login": login, "password": password})
            if r.status_code == 200:
                alert = re.search(r'role="alert">([^<]*)<', r.text)
                raise AssertionError(f"the provider refused the login: {alert.group(1) if alert else r.text[:300]}")
            url = urljoin(url, r.headers["location"])
        raise AssertionError("too many redirects at the provider")
    finally:
        if own:
            client.close()
