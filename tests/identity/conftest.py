"""Fixtures of the identity tests: a real OpenID provider (oidc-provider on Node) per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import missing_service
from tests.identity.provider import OidcProvider, make_key, provider_missing


@pytest.fixture(scope="session")
def provider_keys() -> list[dict[str, object]]:
    """Three RSA signing keys, made once per run (2048-bit keys take a moment each)."""
    return [make_key(f"key-{n}") for n in (1, 2, 3)]


@pytest.fixture
def oidc_provider(tmp_path: Path, provider_keys: list[dict[str, object]]) -> Iterator[OidcProvider]:
    """A running provider signing with key-1 and publishing key-1 and key-2 (stopped afterwards).
    Fails instead of skipping when KBAI_REQUIRE_SERVICES=1 and Node or the package is missing."""
    why = provider_missing()
    if why:
        missing_service(why)
    provider = OidcProvider(tmp_path / "provider", keys=list(provider_keys[:2]))
    provider.start()
    yield provider
    provider.stop()
