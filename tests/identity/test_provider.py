"""The test OpenID provider is the real thing: discovery, two published keys, PKCE required, its own login."""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import urlencode

import httpx

from tests.identity.provider import CLIENT_ID, CLIENT_SECRET, OidcProvider, login_at_provider


def _auth_url(provider: OidcProvider, redirect_uri: str, **extra: str) -> str:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {
        "client_id": CLIENT_ID,
        "response_type": "code",
        "scope": "openid email org",
        "redirect_uri": redirect_uri,
        "state": "s",
        "nonce": "n",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return provider.issuer + "/auth?" + urlencode(params)


def test_discovery_publishes_two_keys_and_requires_s256(oidc_provider: OidcProvider) -> None:
    meta = httpx.get(oidc_provider.issuer + "/.well-known/openid-configuration").json()
    assert meta["issuer"] == oidc_provider.issuer
    assert meta["code_challenge_methods_supported"] == ["S256"]
    kids = [k["kid"] for k in httpx.get(meta["jwks_uri"]).json()["keys"]]
    assert kids == ["key-1", "key-2"]
    assert all("d" not in k for k in httpx.get(meta["jwks_uri"]).json()["keys"])  # public parts only


def test_its_own_login_page_refuses_a_wrong_password_and_returns_a_code(oidc_provider: OidcProvider) -> None:
    oidc_provider.add_client("http://app.test/cb")
    oidc_provider.set_account("alice", "alice-pass", email="alice@acme.test", org_id="org-1")
    try:
        login_at_provider(_auth_url(oidc_provider, "http://app.test/cb"), "alice", "wrong")
    except AssertionError as err:
        assert "Wrong username or password" in str(err)
    else:
        raise AssertionError("a wrong password got through")
    landing = login_at_provider(_auth_url(oidc_provider, "http://app.test/cb"), "alice", "alice-pass")
    assert landing.url.startswith("http://app.test/cb?") and landing.params["state"] == "s"
    assert landing.params["code"] and landing.params["iss"] == oidc_provider.issuer


def test_without_pkce_the_provider_refuses(oidc_provider: OidcProvider) -> None:
    oidc_provider.add_client("http://app.test/cb")
    url = (
        oidc_provider.issuer
        + "/auth?"
        + urlencode(
            {
                "client_id": CLIENT_ID,
                "response_type": "code",
                "scope": "openid",
                "redirect_uri": "http://app.test/cb",
                "state": "s",
            }
        )
    )
    r = httpx.get(url)
    assert r.status_code == 303 and "error=invalid_request" in r.headers["location"]
    assert CLIENT_SECRET  # the secret is the provider's to check at the token endpoint (tests/identity/test_oidc.py)
