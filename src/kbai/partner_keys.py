"""Who may report a leak: GitHub secret-scanning signatures, checked against a public_keys file.

GitHub signs every partner alert: ``Github-Public-Key-Signature`` is a base64 DER ECDSA
signature (P-256, SHA-256) over the raw request body, made with the key that
``Github-Public-Key-Identifier`` names. The keys are those GitHub publishes in its
``public_keys`` format::

    {"public_keys": [{"key_identifier": "...", "key": "-----BEGIN PUBLIC KEY-----...", "is_current": true}]}

The operator saves that document in a file (``KBAI_SECRET_SCANNING_KEYS_FILE``) and refreshes it when
GitHub rotates keys; the file is re-read whenever it changes, so no restart is needed. Every key
listed is accepted, current or not, so that alerts signed just before a rotation still verify.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from kbai import errors
from kbai.errors import KbaiError

log = logging.getLogger("kbai.leaks")
MAX_HEADER_LENGTH = 1024


class PartnerKeys:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self._warned_unset = False

    def verify(self, key_id: str | None, signature: str | None, body: bytes) -> None:
        """Raise the public 401 unless ``signature`` over ``body`` verifies with the key ``key_id``."""
        if not key_id or not signature or len(key_id) > MAX_HEADER_LENGTH or len(signature) > MAX_HEADER_LENGTH:
            raise KbaiError(errors.SIGNATURE_MISSING)
        key = self.keys().get(key_id.strip())
        if key is None:
            raise KbaiError(errors.SIGNATURE_KEY_UNKNOWN)
        try:
            der = base64.b64decode(signature.strip(), validate=True)
            key.verify(der, body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, binascii.Error, ValueError):
            raise KbaiError(errors.SIGNATURE_INVALID) from None

    def keys(self) -> dict[str, ec.EllipticCurvePublicKey]:
        """The usable keys by identifier, re-read when the file's size or modification time changes."""
        if self.path is None:
            if not self._warned_unset:  # once: unsigned junk must not flood the log
                self._warned_unset = True
                log.warning("a secret-scanning report arrived but KBAI_SECRET_SCANNING_KEYS_FILE is not set")
            return {}
        try:
            st = self.path.stat()
        except OSError as exc:
            with self._lock:
                if self._stamp != (-1, -1):  # log when it goes missing, not on every request after
                    log.error("cannot read the secret-scanning keys file %s: %s", self.path, exc.strerror)
                self._stamp, self._keys = (-1, -1), {}
            return {}
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._keys = load_keys(self.path)
                self._stamp = stamp
            return self._keys


def load_keys(path: Path) -> dict[str, ec.EllipticCurvePublicKey]:
    """Parse a ``public_keys`` document; entries that are not P-256 public keys are logged and skipped."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.error("the secret-scanning keys file %s is not readable JSON: %s", path, type(exc).__name__)
        return {}
    entries = document.get("public_keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        log.error('the secret-scanning keys file %s has no "public_keys" list', path)
        return {}
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    for entry in entries:
        key_id = entry.get("key_identifier") if isinstance(entry, dict) else None
        pem = entry.get("key") if isinstance(entry, dict) else None
        if not isinstance(key_id, str) or not isinstance(pem, str):
            log.error("skipping a secret-scanning key without key_identifier or key in %s", path)
            continue
        try:
            key = load_pem_public_key(pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError, TypeError, UnsupportedAlgorithm):
            log.error("skipping secret-scanning key %s: not a PEM public key", key_id[:80])
            continue
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            log.error("skipping secret-scanning key %s: not an ECDSA P-256 key", key_id[:80])
            continue
        keys[key_id] = key
    return keys
