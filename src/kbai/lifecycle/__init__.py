"""Lifecycle: the features built on the token core and outbound delivery, and the worker that runs them.

``leaks`` is the leak response (tokens reported by GitHub secret scanning, by anyone through public
revocation, or found by ``kbai scan``, whose file walk is ``scan``): revoked at once through the token
service, audited, owners and admins notified. ``reminders`` sends expiry reminders exactly once (a
claim row committed with the send), ``hygiene`` computes the attention flags and applies the
auto-revoke policy, ``activity`` turns hourly usage into a heatmap, ``inventory`` is the reviewers'
view of a whole tenant, ``reuse`` alerts the owner when a rotated-out token is used again, and
``worker`` is ``kbai worker``: it runs the reminder and auto-revoke passes and drains the outbox.

Layer: above ``tokens``, ``access``, ``delivery``, ``audit``, ``store`` and the foundation modules;
below ``services`` and the HTTP surfaces, which it never imports (docs/architecture.md).
"""
