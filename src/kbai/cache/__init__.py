"""Cache: what makes a warm verification cost a format check, one digest and one dict lookup.

``verification.VerificationCache`` keeps the stored record behind each digest (and, briefly, the
fact that a digest is unknown, so floods of garbage tokens never reach the database). Expiry
needs no invalidation: the record carries ``expires_at`` and the pipeline compares it with the
clock on every call. Everything else that changes a verdict (revoke, rotate, a role's
permissions, a user's roles, deactivation) is announced through ``bus``: applied at once in the
process that made the change, and published so every other process (worker or instance) drops
the same entries within milliseconds: over Redis pub/sub when configured, else PostgreSQL
LISTEN/NOTIFY, else a table every SQLite process polls. The failure limiter announces newly
blocked client addresses on the same channel. While a process's channel is down its cache is
bypassed; a process that never listens (the CLI) keeps entries only ``KBAI_CACHE_TTL_SECONDS``.
"""
