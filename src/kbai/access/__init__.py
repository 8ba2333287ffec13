"""Access: tenants, users, roles, the permission catalog and the maths of effective permissions.

A user's permissions are the union of their roles' permissions, cut to what the catalog knows
(the built-in Admin role holds the whole catalog, including operator-added permissions). The
same function answers "what may this user do now" for sessions and for tokens, so taking a
permission off a role takes it off every token of every holder at once. Every change is audited,
and a tenant is never left without an active admin.
"""
