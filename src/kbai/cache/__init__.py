"""Cache: what makes a warm verification cost a format check, one digest and one dict lookup.

``verification.VerificationCache`` keeps the stored record behind each digest (and, briefly, the
fact that a digest is unknown, so floods of garbage tokens never reach the database). Expiry
needs no invalidation: the record carries ``expires_at`` and the pipeline compares it with the
clock on every call. Everything else that changes a verdict (revoke, rotate, a role's
permissions, a user's roles, deactivation) is announced through ``bus``: applied at once on the
instance that made the change, and published on Redis so every other instance drops the same
entries within milliseconds. Without Redis, entries live at most ``KBAI_CACHE_TTL_SECONDS`` so
several instances converge within that bound; with Redis, a lost connection drops the cache and
bypasses it until the subscription is back.
"""
