"""Secrets kbai must be able to use again (webhook signing secrets), kept encrypted at rest with Fernet.

A webhook secret cannot be stored as a digest like a token: every event is signed with it. So the
database holds it encrypted (Fernet: AES-128-CBC + HMAC-SHA256, from ``cryptography``) under a key
that is not in the database, and a copy of the database (a backup, a dump, a stolen file) signs
nothing. Where the key comes from:

* ``KBAI_ENCRYPTION_KEY``: one Fernet key, or several comma-separated while rotating (the first
  encrypts, every one decrypts). Every instance and worker needs the same.
* unset, with a SQLite file: a key file beside the database, ``<database file>.key``, created with
  mode 0600 the first time a secret is stored (every process using that file finds it there). A
  copy of the ``.db`` without the ``.key`` holds no usable secret.
* unset, with PostgreSQL (many hosts, no shared file): nothing is stored and setting up a webhook
  is refused with :data:`~kbai.errors.ENCRYPTION_KEY_REQUIRED`, which tells the operator what to set.

Migration 0005 encrypts the secrets stored in clear by earlier versions, the same way.
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy.engine import make_url

from kbai import errors
from kbai.errors import KbaiError


def key_file_for(database_url: str) -> Path | None:
    """Where the key file of a SQLite database lives (None for PostgreSQL or an in-memory database)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database)
    return path.with_name(path.name + ".key")


def _read_or_create(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    key = Fernet.generate_key()
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, key + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)  # atomic, and refuses to replace a key another process made first
    except FileExistsError:
        pass
    finally:
        temp.unlink()
    return path.read_bytes().strip()


class SecretBox:
    """Encrypts and decrypts stored secrets. The key is found (or the key file made) on first use."""

    def __init__(self, keys: str | None, key_file: Path | None) -> None:
        self._configured = [k.strip().encode() for k in (keys or "").split(",") if k.strip()]
        self.key_file = None if self._configured else key_file
        self._fernet: MultiFernet | None = None
        self._lock = threading.Lock()

    @classmethod
    def configure(cls, encryption_key: str | None, database_url: str) -> SecretBox:
        return cls(encryption_key, key_file_for(database_url))

    @property
    def available(self) -> bool:
        return bool(self._configured) or self.key_file is not None

    def _keys(self) -> MultiFernet:
        with self._lock:
            if self._fernet is None:
                if self._configured:
                    keys = self._configured
                elif self.key_file is not None:
                    keys = [_read_or_create(self.key_file)]
                else:
                    raise KbaiError(errors.ENCRYPTION_KEY_REQUIRED)
                self._fernet = MultiFernet([Fernet(k) for k in keys])
            return self._fernet

    def encrypt(self, plaintext: str) -> str:
        return self._keys().encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, sealed: str) -> str:
        try:
            return self._keys().decrypt(sealed.encode("ascii")).decode()
        except (InvalidToken, UnicodeError, ValueError):
            raise KbaiError(errors.ENCRYPTION_KEY_WRONG) from None
