"""The permission catalog: built-in groups plus the operator's own from a TOML file."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

KEY_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
MANAGE_TOKENS = "developer.manage_tokens"
REVIEW_TOKENS = "developer.review_tokens"
MANAGE_SERVICE_TOKENS = "developer.manage_service_tokens"
# Permissions that need a person at the keyboard: they are never offered or accepted as token scopes,
# and a stored token that holds one (made before this rule) acts without it. A token can never mint,
# manage people or change roles; everything else (the read permissions, reviewing tokens, the
# operator's own permissions) can be a scope.
SESSION_ONLY = frozenset({MANAGE_TOKENS, MANAGE_SERVICE_TOKENS, "users.manage", "roles.manage"})


@dataclass(frozen=True)
class Permission:
    key: str
    label: str
    group: str
    # Needs an interactive session: never a token scope (see SESSION_ONLY).
    session_only: bool = False


def _permission(key: str, label: str, group: str) -> Permission:
    return Permission(key, label, group, session_only=key in SESSION_ONLY)


BUILTIN: tuple[Permission, ...] = (
    _permission(MANAGE_TOKENS, "Manage API Tokens", "Developer"),
    _permission(REVIEW_TOKENS, "Review all tokens of the tenant", "Developer"),
    _permission(MANAGE_SERVICE_TOKENS, "Manage service tokens", "Developer"),
    _permission("users.read", "View users", "Users"),
    _permission("users.manage", "Manage users", "Users"),
    _permission("roles.read", "View roles", "Roles"),
    _permission("roles.manage", "Manage roles", "Roles"),
    _permission("audit.read", "Read the audit log", "Audit"),
)


class CatalogError(ValueError):
    """The operator's permissions file is unusable; the message says where and why."""


class Catalog:
    """Ordered permissions, grouped for display, looked up by key."""

    def __init__(self, permissions: tuple[Permission, ...] = BUILTIN) -> None:
        self.permissions = permissions
        self._by_key = {p.key: p for p in permissions}
        self._keys = frozenset(self._by_key)  # a catalog never changes: every cold verification reads this
        self.session_only = frozenset(p.key for p in permissions if p.session_only)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def get(self, key: str) -> Permission | None:
        return self._by_key.get(key)

    @property
    def keys(self) -> frozenset[str]:
        return self._keys

    def token_usable(self, keys: frozenset[str] | set[str]) -> frozenset[str]:
        """The permissions among ``keys`` that a token can carry (session-only ones left out)."""
        return frozenset(keys) - self.session_only

    def label(self, key: str) -> str:
        """A permission's label ("Read contacts"), or the key itself when it is not in the catalog."""
        found = self._by_key.get(key)
        return found.label if found else key

    def groups(self) -> list[tuple[str, list[Permission]]]:
        """[(group, [permissions...])] in catalog order."""
        out: dict[str, list[Permission]] = {}
        for p in self.permissions:
            out.setdefault(p.group, []).append(p)
        return list(out.items())

    @classmethod
    def load(cls, path: Path | None) -> Catalog:
        """The built-in catalog, plus the groups in ``path`` when given.

        The file looks like::

            [groups.Contacts]
            "contacts.read" = "Read contacts"
            "contacts.write" = "Edit contacts"
        """
        if path is None:
            return cls()
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise CatalogError(f"KBAI_PERMISSIONS_FILE {path}: {exc}") from None
        groups = data.get("groups")
        if not isinstance(groups, dict) or not groups:
            raise CatalogError(f"KBAI_PERMISSIONS_FILE {path}: expected [groups.<Name>] tables")
        perms = list(BUILTIN)
        seen = {p.key for p in perms}
        for group, entries in groups.items():
            if not isinstance(entries, dict):
                raise CatalogError(f"KBAI_PERMISSIONS_FILE {path}: [groups.{group}] must map keys to labels")
            for key, label in entries.items():
                if not KEY_RE.fullmatch(key) or len(key) > 100:
                    raise CatalogError(
                        f"KBAI_PERMISSIONS_FILE {path}: '{key}' is not a permission key like 'contacts.read'"
                    )
                if key in seen:
                    raise CatalogError(f"KBAI_PERMISSIONS_FILE {path}: '{key}' is defined twice")
                if not isinstance(label, str) or not label.strip():
                    raise CatalogError(f"KBAI_PERMISSIONS_FILE {path}: '{key}' needs a label")
                seen.add(key)
                perms.append(_permission(key, label.strip(), str(group)))
        return cls(tuple(perms))
