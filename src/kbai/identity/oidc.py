"""OpenID Connect relying party: discovery, the authorization request, the code exchange, the ID token.

The browser carries the flow between ``/oidc/login`` and ``/oidc/callback`` in one short-lived cookie,
encrypted and authenticated (Fernet, key derived from the client secret, so every instance opens every
other's flows). It holds ``state``, ``nonce``, the PKCE verifier and where to go next; the callback
must show the same ``state``, so a callback that did not start in this browser, or a second use of
one, is refused before anything reaches the provider. The ID token is checked completely: signature
from the provider's JWKS (fetched again once when the token names a key not seen yet, which is how a
provider rotates keys), ``iss``, ``aud`` (and ``azp``), ``exp``, ``iat`` and ``nonce``.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import secrets
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import httpx
from authlib.deprecate import AuthlibDeprecationWarning
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet

from kbai import errors
from kbai.clock import Clock
from kbai.config import Settings, secure_url
from kbai.errors import KbaiError

with warnings.catch_warnings():
    # Authlib prefers the httpx2 package and warns when it falls back to httpx, which kbai pins (and supports).
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client, OAuthError

log = logging.getLogger("kbai.identity")

BASE_SCOPES = ("openid", "email", "profile")
FLOW_TTL_SECONDS = 600
LEEWAY_SECONDS = 60  # clock skew allowed between kbai and the provider
DISCOVERY_TTL_SECONDS = 3600
HTTP_TIMEOUT_SECONDS = 5.0
# Asymmetric signatures only: "none" and HS* (a MAC with the client secret) are never accepted.
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
_ERROR_CODE = re.compile(r"[a-z0-9_]{1,60}")


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str
    provider_name: str
    scopes: tuple[str, ...]
    tenant_claim: str
    roles_claim: str
    external_id_claim: str
    create_tenants: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcConfig | None:
        if not settings.oidc_enabled:
            return None
        assert settings.oidc_issuer and settings.oidc_client_id and settings.oidc_client_secret
        extra = [s for s in settings.oidc_scopes.replace(",", " ").split() if s not in BASE_SCOPES]
        return cls(
            settings.oidc_issuer,
            settings.oidc_client_id,
            settings.oidc_client_secret,
            settings.oidc_provider_name,
            BASE_SCOPES + tuple(dict.fromkeys(extra)),
            settings.oidc_tenant_claim,
            settings.oidc_roles_claim,
            settings.oidc_external_id_claim,
            settings.oidc_create_tenants,
        )

    def __repr__(self) -> str:  # never the secret
        return f"OidcConfig(issuer={self.issuer!r}, client_id={self.client_id!r})"


@dataclass(frozen=True)
class Flow:
    """One sign-in in progress, as the browser carries it (sealed) from the login to the callback."""

    state: str
    nonce: str
    verifier: str
    next: str
    redirect_uri: str
    started: int


class FlowSeal:
    """Encrypts and authenticates a :class:`Flow` for its cookie; a forged, altered or stale one opens to None."""

    def __init__(self, client_secret: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"kbai oidc flow cookie").derive(
            client_secret.encode()
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def seal(self, flow: Flow) -> str:
        return self._fernet.encrypt_at_time(json.dumps(asdict(flow)).encode(), flow.started).decode()

    def open(self, sealed: str | None, now: int) -> Flow | None:
        if not sealed or len(sealed) > 4000:
            return None
        try:
            data = json.loads(self._fernet.decrypt_at_time(sealed.encode(), FLOW_TTL_SECONDS, now))
            return Flow(**data)
        except (InvalidToken, ValueError, TypeError):
            return None


class OidcClient:
    """Talks to one provider. Discovery and the JWKS are cached; every network failure is a KbaiError."""

    def __init__(self, config: OidcConfig, clock: Clock, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self.clock = clock
        self.seal = FlowSeal(config.client_secret)
        self._transport = transport
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None

    # ---- the two halves of a sign-in ----------------------------------------------------------
    def begin(self, next_path: str, redirect_uri: str) -> tuple[str, str]:
        """The provider's authorization URL for a new flow, and the sealed flow for the browser's cookie."""
        meta = self.metadata()
        flow = Flow(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(48),
            next=next_path,
            redirect_uri=redirect_uri,
            started=self._now(),
        )
        with self._oauth(redirect_uri) as oauth:
            url, _ = oauth.create_authorization_url(
                meta["authorization_endpoint"], state=flow.state, code_verifier=flow.verifier, nonce=flow.nonce
            )
        return url, self.seal.seal(flow)

    def finish(self, params: Mapping[str, str], sealed: str | None) -> tuple[Flow, dict[str, Any]]:
        """Check the callback against its flow, redeem the code, validate the ID token; its claims."""
        flow = self.seal.open(sealed, self._now())
        state = params.get("state") or ""
        if flow is None or not hmac.compare_digest(state.encode(), flow.state.encode()):
            raise KbaiError(errors.OIDC_STATE_MISMATCH, minutes=FLOW_TTL_SECONDS // 60)
        name = self.config.provider_name
        if "error" in params:
            code = params["error"] if _ERROR_CODE.fullmatch(params["error"]) else "an error"
            raise KbaiError(errors.OIDC_PROVIDER_REFUSED, provider=name, reason=code)
        if "iss" in params and params["iss"] != self.config.issuer:  # RFC 9207: a mix-up with another provider
            raise KbaiError(errors.OIDC_ID_TOKEN_INVALID, provider=name, reason="the answer came from another issuer")
        code = params.get("code") or ""
        if not code or len(code) > 2000:
            raise KbaiError(errors.OIDC_PROVIDER_REFUSED, provider=name, reason="no code")
        meta = self.metadata()
        try:
            with self._oauth(flow.redirect_uri) as oauth:
                token = oauth.fetch_token(
                    meta["token_endpoint"], grant_type="authorization_code", code=code, code_verifier=flow.verifier
                )
        except OAuthError as err:
            if err.error in ("invalid_grant", "invalid_request"):
                raise KbaiError(errors.OIDC_CODE_REJECTED, provider=name) from None
            raise KbaiError(
                errors.OIDC_PROVIDER_REFUSED,
                provider=name,
                reason=err.error if _ERROR_CODE.fullmatch(err.error or "") else "an error",
            ) from None
        except (httpx.HTTPError, ValueError) as err:
            log.warning("OIDC token endpoint failed: %s", type(err).__name__)
            raise KbaiError(errors.OIDC_PROVIDER_UNREACHABLE, provider=name) from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise KbaiError(errors.OIDC_ID_TOKEN_INVALID, provider=name, reason="the answer holds no ID token")
        return flow, self.validate(id_token, flow.nonce)

    # ---- the ID token -------------------------------------------------------------------------
    def validate(self, id_token: str, nonce: str) -> dict[str, Any]:
        name = self.config.provider_name
        meta = self.metadata()
        offered = meta.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = [a for a in SIGNING_ALGORITHMS if a in offered]
        refreshed = False

        def key_for(obj: Any) -> Any:
            nonlocal refreshed
            kid = obj.headers().get("kid")
            keys = self.jwks()
            try:
                return keys.get_by_kid(kid)
            except InvalidKeyIdError:
                pass
            if not refreshed:  # a key we have not seen: the provider may have rotated; look once more
                refreshed = True
                keys = self.jwks(refresh=True)
                try:
                    return keys.get_by_kid(kid)
                except InvalidKeyIdError:
                    pass
            raise _UnknownKey

        try:
            decoded = jwt.decode(id_token, key_for, algorithms=algorithms)
        except _UnknownKey:
            raise KbaiError(errors.OIDC_UNKNOWN_KEY, provider=name) from None
        except BadSignatureError:
            raise KbaiError(
                errors.OIDC_ID_TOKEN_INVALID, provider=name, reason="its signature does not verify"
            ) from None
        except JoseError:
            raise KbaiError(
                errors.OIDC_ID_TOKEN_INVALID,
                provider=name,
                reason="it is malformed or signed with an algorithm kbai does not accept",
            ) from None
        claims = decoded.claims
        registry = jwt.JWTClaimsRegistry(
            now=self._now(),
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": self.config.issuer},
            aud={"essential": True, "value": self.config.client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise KbaiError(errors.OIDC_ID_TOKEN_INVALID, provider=name, reason="it has expired (exp)") from None
        except (InvalidClaimError, MissingClaimError) as err:
            reason = _CLAIM_REASONS.get(err.claim, f"its '{err.claim}' claim is missing or wrong")
            raise KbaiError(errors.OIDC_ID_TOKEN_INVALID, provider=name, reason=reason) from None
        aud = claims["aud"]
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.config.client_id:
            raise KbaiError(errors.OIDC_ID_TOKEN_INVALID, provider=name, reason=_CLAIM_REASONS["aud"])
        if not isinstance(claims["sub"], str) or not 1 <= len(claims["sub"]) <= 255:
            raise KbaiError(errors.OIDC_ID_TOKEN_INVALID, provider=name, reason="its 'sub' claim is not usable")
        return dict(claims)

    # ---- what the provider publishes ------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (cached for an hour), checked: same issuer, secure endpoints."""
        with self._lock:
            if self._metadata is not None and time.monotonic() - self._metadata_at < DISCOVERY_TTL_SECONDS:
                return self._metadata
        url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        meta = self._get_json(url)
        endpoints = ("authorization_endpoint", "token_endpoint", "jwks_uri")
        if meta.get("issuer") != self.config.issuer or not all(
            isinstance(meta.get(k), str) and secure_url(meta[k]) for k in endpoints
        ):
            log.warning(
                "OIDC discovery at %s does not describe issuer %s with secure endpoints", url, self.config.issuer
            )
            raise KbaiError(errors.OIDC_PROVIDER_UNREACHABLE, provider=self.config.provider_name)
        with self._lock:
            self._metadata, self._metadata_at = meta, time.monotonic()
        return meta

    def jwks(self, refresh: bool = False) -> KeySet:
        with self._lock:
            if self._keys is not None and not refresh:
                return self._keys
        data = self._get_json(self.metadata()["jwks_uri"])
        try:
            keys = KeySet.import_key_set({"keys": [k for k in data.get("keys", []) if k.get("use", "sig") == "sig"]})
        except (JoseError, ValueError, TypeError, AttributeError):
            log.warning("OIDC JWKS of %s could not be read", self.config.issuer)
            raise KbaiError(errors.OIDC_PROVIDER_UNREACHABLE, provider=self.config.provider_name) from None
        with self._lock:
            self._keys = keys
        log.info("OIDC JWKS of %s loaded: %d key(s)", self.config.issuer, len(keys.keys))
        return keys

    # ---- plumbing ---------------------------------------------------------------------------------
    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            with httpx.Client(timeout=HTTP_TIMEOUT_SECONDS, transport=self._transport) as client:
                r = client.get(url, headers={"Accept": "application/json"})
            data = r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as err:
            log.warning("OIDC provider unreachable at %s: %s", url, type(err).__name__)
            data = None
        if not isinstance(data, dict):
            raise KbaiError(errors.OIDC_PROVIDER_UNREACHABLE, provider=self.config.provider_name)
        return data

    def _oauth(self, redirect_uri: str) -> OAuth2Client:
        return OAuth2Client(
            client_id=self.config.client_id,
            client_secret=self.config.client_secret,
            scope=" ".join(self.config.scopes),
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic",
            timeout=HTTP_TIMEOUT_SECONDS,
            transport=self._transport,
        )

    def _now(self) -> int:
        now: datetime = self.clock.now()
        return int(now.timestamp())


class _UnknownKey(Exception):
    """The ID token names a key the provider does not publish, even after looking again."""


_CLAIM_REASONS = {
    "aud": "it was issued for another application (aud)",
    "azp": "it was issued for another application (azp)",
    "iss": "it was issued by another provider (iss)",
    "nonce": "it belongs to another sign-in (nonce)",
    "iat": "its issue time is wrong (iat)",
    "exp": "it has expired (exp)",
    "sub": "it does not say who you are (sub)",
}
