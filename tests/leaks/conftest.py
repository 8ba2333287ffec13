"""Leak-response fixtures: a P-256 key of our own standing in for GitHub's, published in a keys file in
GitHub's public_keys format, and services/app clients configured with that file."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from kbai.app import create_app
from kbai.config import Settings
from kbai.services import Services
from tests.conftest import FAST_ARGON2

KEY_ID = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"


def public_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@dataclass
class Signer:
    """Signs bodies the way GitHub does: base64 DER ECDSA P-256 / SHA-256 over the raw bytes."""

    key: ec.EllipticCurvePrivateKey
    key_id: str
    keys_file: Path

    def sign(self, body: bytes, key: ec.EllipticCurvePrivateKey | None = None) -> str:
        der = (key or self.key).sign(body, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(der).decode()

    def headers(self, body: bytes, *, key_id: str | None = None) -> dict[str, str]:
        return {
            "Github-Public-Key-Identifier": key_id or self.key_id,
            "Github-Public-Key-Signature": self.sign(body),
            "Content-Type": "application/json",
        }

    def publish(self, *keys: tuple[str, ec.EllipticCurvePrivateKey, bool]) -> None:
        """Write the keys file: (key_identifier, private key whose public half is listed, is_current)."""
        doc = {
            "public_keys": [
                {"key_identifier": kid, "key": public_pem(k), "is_current": current} for kid, k, current in keys
            ]
        }
        self.keys_file.write_text(json.dumps(doc), encoding="utf-8")


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    s = Signer(ec.generate_private_key(ec.SECP256R1()), KEY_ID, tmp_path / "secret-scanning-keys.json")
    old = ec.generate_private_key(ec.SECP256R1())
    s.publish(("old-key", old, False), (KEY_ID, s.key, True))
    return s


@pytest.fixture
def settings(database_url: str, signer: Signer) -> Settings:
    return Settings(database_url=database_url, secret_scanning_keys_file=signer.keys_file, **FAST_ARGON2)


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services, start_background=False)) as c:
        yield c


def report_body(*entries: tuple[str, str]) -> bytes:
    """A GitHub alert body for (token, url) pairs."""
    return json.dumps(
        [{"token": t, "type": "kbai_api_token", "url": u, "source": "content"} for t, u in entries]
    ).encode()
