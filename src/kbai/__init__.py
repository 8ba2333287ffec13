"""kbai — Developer API tokens for a multi-tenant SaaS product.

Layers, top to bottom (nothing imports anything above it):

* ``cli`` and ``web`` are the entry points: they parse input and render output.
* ``tokens`` (mint, parse, verify, lifecycle) and ``access`` (tenants, users, roles, the
  permission catalog) hold every rule of the product; ``audit`` records what they change.
* ``store`` is the only place that knows about SQL: models, engine, migrations.

``config`` is the only reader of environment variables; ``clock`` is the only source of "now";
``errors`` defines every error a user can see.
"""

__version__ = "0.1.0"
