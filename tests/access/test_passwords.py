"""Password hashing (docs/security.md): argon2id with RFC 9106's low-memory profile by default (t=3,
64 MiB, p=4), configurable, hashes upgraded to the current parameters at the next successful login, and
an unknown email costs a full verification like a known one."""

from __future__ import annotations

from unittest import mock

from argon2 import PasswordHasher
from sqlalchemy import select

from kbai.access.passwords import Passwords
from kbai.config import Settings
from kbai.services import Services
from kbai.store.models import Person
from tests.conftest import OPERATOR, build_world
from tests.tokens.helpers import raises_code


def test_defaults_are_the_rfc_9106_low_memory_profile() -> None:
    s = Settings(database_url="sqlite://")
    assert (s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism) == (3, 65536, 4)
    hashed = Passwords(s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism).hash("a password")
    assert hashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def _stored_hash(svc: Services, email: str) -> str:
    with svc.db.read() as s:
        return str(s.scalar(select(Person.password_hash).where(Person.email == email)))


def test_settings_choose_the_parameters_and_old_hashes_are_upgraded_at_login(database_url: str) -> None:
    old = Services.build(
        Settings(database_url=database_url, argon2_time_cost=1, argon2_memory_kib=64, argon2_parallelism=1)
    )
    try:
        build_world(old)
        assert _stored_hash(old, "dev@acme.test").startswith("$argon2id$v=19$m=64,t=1,p=1$")
    finally:
        old.close()
    new = Services.build(
        Settings(database_url=database_url, argon2_time_cost=2, argon2_memory_kib=128, argon2_parallelism=2)
    )
    try:
        new.access.authenticate("dev@acme.test", "dev-password-1")
        assert _stored_hash(new, "dev@acme.test").startswith("$argon2id$v=19$m=128,t=2,p=2$")
        new.access.authenticate("dev@acme.test", "dev-password-1")  # and the new hash verifies
        # A wrong password changes nothing.
        before = _stored_hash(new, "admin@acme.test")
        with raises_code("invalid_credentials"):
            new.access.authenticate("admin@acme.test", "wrong-password-1")
        assert _stored_hash(new, "admin@acme.test") == before
    finally:
        new.close()


def test_an_unknown_email_costs_a_full_verification(database_url: str) -> None:
    svc = Services.build(
        Settings(database_url=database_url, argon2_time_cost=1, argon2_memory_kib=64, argon2_parallelism=1)
    )
    try:
        svc.access.create_tenant(OPERATOR, "Acme", "admin@acme.test", "admin-password-1")
        real = PasswordHasher.verify
        with mock.patch.object(PasswordHasher, "verify", autospec=True, side_effect=real) as verify:
            for email in ("admin@acme.test", "nobody@acme.test"):
                with raises_code("invalid_credentials"):
                    svc.access.authenticate(email, "wrong-password-1")
        assert verify.call_count == 2  # one argon2 verification for the known and for the unknown email
    finally:
        svc.close()
