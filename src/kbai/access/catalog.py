"""The permission catalog: built-in groups plus the operator's own from a TOML file."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

KEY_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
MANAGE_TOKENS = "developer.manage_tokens"
REVIEW_TOKENS = "developer.review_tokens"


@dataclass(frozen=True)
class Permission:
    key: str
    label: str
    group: str


BUILTIN: tuple[Permission, ...] = (
    Permission(MANAGE_TOKENS, "Manage API Tokens", "Developer"),
    Permission(REVIEW_TOKENS, "Review all tokens of the tenant", "Developer"),
    Permission("users.read", "View users", "Users"),
    Permission("users.manage", "Manage users", "Users"),
    Permission("roles.read", "View roles", "Roles"),
    Permission("roles.manage", "Manage roles", "Roles"),
    Permission("audit.read", "Read the audit log", "Audit"),
)


class CatalogError(ValueError):
    """The operator's permissions file is unusable; the message says where and why."""


class Catalog:
    """Ordered permissions, grouped for display, looked up by key."""

    def __init__(self, permissions: tuple[Permission, ...] = BUILTIN) -> None:
        self.permissions = permissions
        self._by_key = {p.key: p for p in permissions}

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def get(self, key: str) -> Permission | None:
        return self._by_key.get(key)

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self._by_key)

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
                perms.append(Permission(key, label.strip(), str(group)))
        return cls(tuple(perms))
