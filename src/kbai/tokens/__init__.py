"""Tokens: the format (mint, parse, digest, display prefix), the verification pipeline and the lifecycle.

``format`` is the only place that knows what a token looks like. ``verify`` turns a presented
string into an explicit :class:`~kbai.tokens.verify.Outcome` in a fixed order (format, digest
lookup, revoked/expired/owner, scopes) and never raises for a bad token. ``service`` creates,
lists, revokes and rotates tokens under the rules of the spec (permission, held scopes, names,
the active-token limit) inside one serialized transaction per user, and audits every change.
``leaks`` is the leak response: tokens reported by GitHub secret scanning, by anyone through public
revocation or found by ``kbai scan`` (``scan`` walks files) are revoked at once through the service,
audited, and their owners and admins notified. The rest of the lifecycle builds on the service:
``policy`` holds each tenant's rules (checked by create and rotate), ``reminders`` sends expiry
reminders exactly once (a claim row committed with the send), ``hygiene`` computes the attention
flags and applies the auto-revoke policy, ``activity`` turns hourly usage into a heatmap, and
``inventory`` is the reviewers' view of a whole tenant. Nothing here imports the web layer; storage
is reached through ``kbai.store``.
"""
