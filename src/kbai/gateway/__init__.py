"""Gateway: the hot path other systems call to check a token.

``GET /auth/check`` answers nginx ``auth_request``, Traefik ForwardAuth and Envoy ext_authz with
200 and identity headers, or 401/403 with RFC 6750 ``WWW-Authenticate``. ``POST
/api/v1/introspect`` is RFC 7662 for resource servers holding a service credential. Both run the
same verification pipeline as the API and nothing more: format, one digest, one lookup, checks.
"""
