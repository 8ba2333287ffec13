"""Sign-in with the product's OpenID provider: validated claims -> who the person is in kbai -> a session.

The tenant is the one whose ``external_id`` equals the tenant claim (``KBAI_OIDC_TENANT_CLAIM``). The
person is their identity (issuer, ``sub``); a first sign-in links to an existing user by the external id
claim or by a verified email, or creates the user there (just in time). A roles claim, when present,
sets the user's roles to exactly those tenant roles (case-insensitive; unknown names are logged once and
ignored). The rules themselves are ``kbai.access``'s (:meth:`~kbai.access.service.AccessService.admit`),
so a sign-in changes exactly what an admin's change would, and is audited with the provider as actor.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from kbai import errors
from kbai.access.service import AccessService, Arrival
from kbai.access.sessions import SessionInfo, SessionService
from kbai.errors import KbaiError
from kbai.identity.oidc import OidcClient
from kbai.store.audit import Actor
from kbai.validate import clean_email, clean_external_id, clean_name

log = logging.getLogger("kbai.identity")


def claim(claims: Mapping[str, Any], name: str) -> Any:
    """The claim called ``name``, or for a dotted name not present as such, the nested one
    (``realm_access.roles`` in Keycloak). Namespaced URLs (Auth0's ``https://example.com/roles``) match as is."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    return text or None


class OidcSignIn:
    def __init__(self, client: OidcClient, access: AccessService, sessions: SessionService) -> None:
        self.client = client
        self.config = client.config
        self.access = access
        self.sessions = sessions
        self._logged_unknown: set[tuple[int, str]] = set()
        self._lock = threading.Lock()

    @property
    def provider_name(self) -> str:
        return self.config.provider_name

    def begin(self, next_path: str, redirect_uri: str) -> tuple[str, str]:
        """(URL of the provider's login, sealed flow for the browser's cookie)."""
        return self.client.begin(next_path, redirect_uri)

    def finish(self, params: Mapping[str, str], sealed: str | None, ip: str | None) -> tuple[str, SessionInfo, str]:
        """Finish a sign-in: (session cookie, session, where to go next). Any failure raises, with nothing kept."""
        flow, claims = self.client.finish(params, sealed)
        arrival = self.arrival(claims)
        actor = Actor(kind="provider", email=self.config.issuer[:180], ip=ip)
        admitted = self.access.admit(actor, arrival)
        self._log_unknown(admitted.tenant_id, admitted.unknown_roles)
        cookie, info = self.sessions.open(admitted.user_id, ip, details={"via": "oidc", "issuer": self.config.issuer})
        return cookie, info, flow.next

    def arrival(self, claims: Mapping[str, Any]) -> Arrival:
        """The validated claims as the access rules see them."""
        tenant_claim = self.config.tenant_claim
        org = _text(claim(claims, tenant_claim))
        try:
            org = None if org is None else clean_external_id(org)
        except KbaiError:
            org = None
        if org is None:
            raise KbaiError(errors.OIDC_CLAIM_MISSING, what="which organisation you belong to", claim=tenant_claim)
        email = _text(claims.get("email"))
        try:
            email = None if email is None else clean_email(email)
        except KbaiError:
            email = None
        verified = claims.get("email_verified")
        org_name = _text(claim(claims, "org_name"))
        try:
            org_name = None if org_name is None else clean_name(org_name, "organisation name")
        except KbaiError:
            org_name = None
        user_ext = _text(claim(claims, self.config.external_id_claim))
        try:
            user_ext = None if user_ext is None else clean_external_id(user_ext)
        except KbaiError:
            user_ext = None
        return Arrival(
            issuer=self.config.issuer,
            subject=str(claims["sub"]),
            email=email,
            email_verified=verified is True or verified == "true",
            tenant_external_id=org,
            tenant_name=org_name,
            create_tenant=self.config.create_tenants,
            user_external_id=user_ext,
            roles=self._roles(claims),
        )

    def _roles(self, claims: Mapping[str, Any]) -> list[str] | None:
        value = claim(claims, self.config.roles_claim)
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            log.warning("OIDC roles claim '%s' is not a list of names; roles left unchanged", self.config.roles_claim)
            return None
        return [v.strip()[:100] for v in value if isinstance(v, str) and v.strip()][:100]

    def _log_unknown(self, tenant_id: int, names: list[str]) -> None:
        with self._lock:
            fresh = [n for n in names if (tenant_id, n.casefold()) not in self._logged_unknown]
            self._logged_unknown.update((tenant_id, n.casefold()) for n in fresh)
        for name in fresh:
            log.warning(
                "OIDC roles claim names role %r, which tenant %d does not have; ignored",
                name,
                tenant_id,
                extra={"tenant_id": tenant_id},
            )
