"""Identity: the host product's people coming in, so kbai needs no second user directory kept by hand.

``oidc`` speaks OpenID Connect to the product's provider (discovery, the authorization code flow with
PKCE, ``state`` and ``nonce``, the code exchange with ``client_secret_basic`` through Authlib, and full
validation of the ID token with joserfc against the provider's JWKS, refetched once when a key is
unknown). ``signin`` turns the validated claims into an :class:`~kbai.access.service.Arrival` (tenant
claim, roles claim, external id, verified email) and hands it to ``kbai.access``, which applies the same
rules as an admin's change, then opens the session. Protocol details stay in this package; ``access``
never imports it, and the web routes (``kbai.web.oidc``) only carry requests and cookies to it.
"""
