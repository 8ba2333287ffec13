"""Token core: the verification pipeline and the token operations every request depends on.

``verify`` turns a presented string into an explicit :class:`~kbai.tokens.verify.Outcome` in a fixed
order (format, digest lookup, revoked/expired/paused/owner, restrictions, scopes) and never raises for
a bad token. ``service`` creates, lists, changes, pauses, revokes and rotates tokens under the rules of
the spec (permission, held scopes, names, the active-token limit) inside one serialized transaction
per user, and audits every change. ``policy`` holds each tenant's rules (checked by create and
rotate), ``restrictions`` the per-token allowlist and description rules, ``usage`` buffers last-used
times and hourly counts off the request path.

Layer: above ``access`` (whose roles and permissions bound a token's scopes), ``delivery``, ``audit``,
``store`` and the foundation modules (``kbai.tokenformat`` is what a token looks like). It never
imports ``lifecycle``, ``cache``, ``identity``, ``services`` or an HTTP surface (``web``, ``gateway``,
``sdk``, ``app``, ``cli``); see docs/architecture.md.
"""
