"""Delivery: everything kbai sends out, and the outbox it leaves through.

``notifications`` writes the in-product notifications (and queues their email copies),
``mail`` sends email over SMTP, ``webhooks`` signs and posts events (Standard Webhooks) to the
tenants' receivers, and ``outbox`` is the table-backed queue that every email and webhook event is
written to in the transaction of its change and sent from after the commit, with retries, under
the hard deadline and SSRF guard of ``kbai.egress``.

Layer: above ``audit``, ``store`` and the foundation modules (``tokenformat`` to redact tokens,
``egress``, ``secretbox``, ``clock``); below ``access``, ``tokens`` and ``lifecycle``, which call it.
It knows nothing of tokens, roles or people beyond the rows it is handed, and never imports a layer
above it (docs/architecture.md). The worker that drains the outbox sits in ``lifecycle`` because it
also runs the lifecycle passes.
"""
