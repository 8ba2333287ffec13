"""The verification pipeline: format, digest lookup, revoked/expired/owner, then scopes.

Every test that touches storage runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kbai import errors
from kbai import tokenformat as fmt
from kbai.clock import FrozenClock
from kbai.tokens.verify import Outcome, TokenRecord, verify
from tests.conftest import OPERATOR, World
from tests.tokens.helpers import assert_no_secret, raises_code

MALFORMED = [
    "",
    "kbai_pk_",
    "kbai_pk_" + "A" * 64,
    "kbai_pk_" + "0" * 63,
    " kbai_pk_" + "0" * 64,
    "kbai_pk_" + "0" * 64 + "\n",
    "kbai_pk_" + "\u0430" * 64,
    "kbai_pk_" + "\uff10" * 64,
    "Bearer kbai_pk_" + "0" * 64,
    None,
    b"kbai_pk_" + b"0" * 64,
    12345,
]


class RecordingLookup:
    """A lookup that remembers every digest it was asked for and finds nothing."""

    def __init__(self, answer: TokenRecord | None = None) -> None:
        self.calls: list[str] = []
        self.answer = answer

    def __call__(self, token_digest: str) -> TokenRecord | None:
        self.calls.append(token_digest)
        return self.answer


def _record(**overrides: object) -> TokenRecord:
    base: dict[str, object] = dict(
        token_id=1,
        tenant_id=1,
        tenant_name="Acme",
        user_id=1,
        email="dev@acme.test",
        prefix="kbai_pk_0000",
        name="t",
        scopes=frozenset({"users.read", "roles.read"}),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        expires_at=None,
        revoked_at=None,
        owner_active=True,
        owner_permissions=frozenset({"users.read", "roles.read", "developer.manage_tokens"}),
    )
    base.update(overrides)
    return TokenRecord(**base)  # type: ignore[arg-type]


NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


# ---- the pure pipeline (no storage) -------------------------------------------------------------
def test_malformed_never_calls_the_lookup() -> None:
    lookup = RecordingLookup(_record())
    for candidate in MALFORMED:
        assert verify(candidate, lookup, NOW).outcome is Outcome.MALFORMED
    assert lookup.calls == []


def test_well_formed_token_is_looked_up_by_its_digest_only() -> None:
    lookup = RecordingLookup()
    token = fmt.mint()
    result = verify(token, lookup, NOW)
    assert result.outcome is Outcome.UNKNOWN
    assert lookup.calls == [fmt.digest(token)]
    assert result.record is None and result.scopes == frozenset()


def test_pipeline_order_revoked_before_expired_before_owner() -> None:
    past = NOW - timedelta(seconds=1)
    token = fmt.mint()
    everything_wrong = _record(revoked_at=past, expires_at=past, owner_active=False)
    assert verify(token, RecordingLookup(everything_wrong), NOW).outcome is Outcome.REVOKED
    expired_and_inactive = _record(expires_at=past, owner_active=False)
    assert verify(token, RecordingLookup(expired_and_inactive), NOW).outcome is Outcome.EXPIRED
    inactive = _record(owner_active=False)
    result = verify(token, RecordingLookup(inactive), NOW, ["users.read"])
    assert result.outcome is Outcome.OWNER_INACTIVE
    assert not result.authenticated


def test_pure_effective_scopes_and_missing() -> None:
    token = fmt.mint()
    record = _record(scopes=frozenset({"users.read", "roles.read"}), owner_permissions=frozenset({"users.read"}))
    ok = verify(token, RecordingLookup(record), NOW, ["users.read"])
    assert ok.outcome is Outcome.VALID and ok.scopes == frozenset({"users.read"})
    short = verify(token, RecordingLookup(record), NOW, ["users.read", "roles.read", "roles.read", "audit.read"])
    assert short.outcome is Outcome.INSUFFICIENT_SCOPE
    assert short.missing == ("roles.read", "audit.read")
    assert short.authenticated and not short.ok


# ---- against storage ----------------------------------------------------------------------------
def test_malformed_through_the_service_is_malformed(world: World) -> None:
    world.services.tokens.create(world.dev, "t", [])
    for candidate in MALFORMED:
        assert world.services.tokens.verify(candidate).outcome is Outcome.MALFORMED


def test_service_verify_checks_the_format_before_touching_storage(world: World, monkeypatch) -> None:
    calls: list[str] = []
    real = world.services.tokens.lookup

    def spy(token_digest: str) -> TokenRecord | None:
        calls.append(token_digest)
        return real(token_digest)

    monkeypatch.setattr(world.services.tokens, "lookup", spy)
    for candidate in MALFORMED:
        assert world.services.tokens.verify(candidate).outcome is Outcome.MALFORMED
    assert calls == []
    _, plaintext = world.services.tokens.create(world.dev, "t", [])
    assert world.services.tokens.verify(plaintext).ok
    assert calls == [fmt.digest(plaintext)]


def test_unknown(world: World) -> None:
    world.services.tokens.create(world.dev, "t", [])
    result = world.services.tokens.verify(fmt.mint())
    assert result.outcome is Outcome.UNKNOWN
    assert result.record is None


def test_valid_token_carries_its_owner(world: World) -> None:
    view, plaintext = world.services.tokens.create(world.dev, "t", ["users.read"])
    result = world.services.tokens.verify(plaintext, ["users.read"])
    assert result.ok and result.authenticated
    assert result.record is not None
    assert result.record.token_id == view.id
    assert result.record.user_id == world.dev.user_id
    assert result.record.tenant_id == world.tenant_id
    assert result.record.tenant_name == "Acme"
    assert result.record.email == "dev@acme.test"
    assert result.record.prefix == plaintext[:12]
    assert result.scopes == frozenset({"users.read"})


def test_a_token_differing_in_one_char_is_unknown(world: World) -> None:
    _, plaintext = world.services.tokens.create(world.dev, "t", [])
    last = plaintext[-1]
    other = plaintext[:-1] + ("0" if last != "0" else "1")
    assert world.services.tokens.verify(other).outcome is Outcome.UNKNOWN
    assert world.services.tokens.verify(plaintext.upper()).outcome is Outcome.MALFORMED


def test_revoked(world: World, clock: FrozenClock) -> None:
    view, plaintext = world.services.tokens.create(world.dev, "t", ["users.read"])
    assert world.services.tokens.verify(plaintext).ok
    world.services.tokens.revoke(world.dev, view.id)
    result = world.services.tokens.verify(plaintext, ["users.read"])
    assert result.outcome is Outcome.REVOKED
    assert not result.authenticated
    clock.advance(seconds=1)
    assert world.services.tokens.verify(plaintext).outcome is Outcome.REVOKED


def test_expired_exactly_to_the_second(world: World, clock: FrozenClock) -> None:
    view, plaintext = world.services.tokens.create(world.dev, "t", [], expires_in_days=7)
    assert view.expires_at is not None
    clock.set(view.expires_at - timedelta(seconds=1))
    assert world.services.tokens.verify(plaintext).outcome is Outcome.VALID
    clock.set(view.expires_at - timedelta(microseconds=1))
    assert world.services.tokens.verify(plaintext).outcome is Outcome.VALID
    clock.set(view.expires_at)
    assert world.services.tokens.verify(plaintext).outcome is Outcome.EXPIRED
    clock.set(view.expires_at + timedelta(days=1000))
    assert world.services.tokens.verify(plaintext).outcome is Outcome.EXPIRED


def test_expired_at_a_given_time_exactly(world: World, clock: FrozenClock) -> None:
    _, plaintext = world.services.tokens.create(world.dev, "t", [], expires_at="2026-01-01T13:00:00Z")
    clock.set(datetime(2026, 1, 1, 12, 59, 59, tzinfo=UTC))
    assert world.services.tokens.verify(plaintext).ok
    clock.set(datetime(2026, 1, 1, 13, 0, 0, tzinfo=UTC))
    assert world.services.tokens.verify(plaintext).outcome is Outcome.EXPIRED


def test_owner_inactive_after_deactivation(world: World) -> None:
    svc = world.services
    _, plaintext = svc.tokens.create(world.dev, "t", ["users.read"])
    assert svc.tokens.verify(plaintext).ok
    svc.access.deactivate_user(world.admin, world.dev.user_id)
    result = svc.tokens.verify(plaintext)
    assert result.outcome is Outcome.OWNER_INACTIVE
    assert not result.authenticated
    assert result.scopes == frozenset()


def test_owner_inactive_when_deactivated_by_the_operator(world: World) -> None:
    svc = world.services
    _, plaintext = svc.tokens.create(world.dev, "t", [])
    svc.access.deactivate_user(OPERATOR, world.dev.user_id)
    assert svc.tokens.verify(plaintext).outcome is Outcome.OWNER_INACTIVE


def test_insufficient_scope_names_what_is_missing(world: World) -> None:
    _, plaintext = world.services.tokens.create(world.dev, "t", ["users.read"])
    result = world.services.tokens.verify(plaintext, ["users.read", "roles.read"])
    assert result.outcome is Outcome.INSUFFICIENT_SCOPE
    assert result.missing == ("roles.read",)
    assert result.authenticated and not result.ok
    assert result.scopes == frozenset({"users.read"})
    # A scope the owner holds but the token was not given is missing too.
    assert world.services.tokens.verify(plaintext, ["developer.manage_tokens"]).missing == ("developer.manage_tokens",)


def test_effective_scopes_are_token_scopes_and_owner_permissions(world: World) -> None:
    svc = world.services
    _, plaintext = svc.tokens.create(world.dev, "t", ["users.read", "roles.read"])
    assert svc.tokens.verify(plaintext).scopes == frozenset({"users.read", "roles.read"})
    # The owner holds developer.manage_tokens, but the token was not given it.
    assert "developer.manage_tokens" not in svc.tokens.verify(plaintext).scopes


def test_removing_a_permission_from_the_role_removes_it_from_tokens_at_once(world: World) -> None:
    svc = world.services
    _, first = svc.tokens.create(world.dev, "first", ["users.read", "roles.read"])
    _, second = svc.tokens.create(world.dev, "second", ["roles.read"])
    # Another holder of the role: their token loses the permission too.
    svc.access.create_user(world.admin, world.tenant_id, "dev2@acme.test", "dev2-password-1", [world.dev_role_id])
    dev2 = world.actor("dev2@acme.test")
    _, third = svc.tokens.create(dev2, "third", ["roles.read"])

    svc.access.update_role(world.admin, world.dev_role_id, ["developer.manage_tokens", "users.read"])

    assert svc.tokens.verify(first).scopes == frozenset({"users.read"})
    lacking = svc.tokens.verify(first, ["roles.read"])
    assert lacking.outcome is Outcome.INSUFFICIENT_SCOPE and lacking.missing == ("roles.read",)
    assert svc.tokens.verify(second).scopes == frozenset()
    assert svc.tokens.verify(second, ["roles.read"]).outcome is Outcome.INSUFFICIENT_SCOPE
    assert svc.tokens.verify(third, ["roles.read"]).outcome is Outcome.INSUFFICIENT_SCOPE
    # The token's own scopes are not rewritten: adding the permission back restores it.
    svc.access.update_role(world.admin, world.dev_role_id, ["developer.manage_tokens", "users.read", "roles.read"])
    assert svc.tokens.verify(first).scopes == frozenset({"users.read", "roles.read"})
    assert svc.tokens.verify(second, ["roles.read"]).ok
    assert svc.tokens.verify(third, ["roles.read"]).ok


def test_taking_the_role_away_from_the_owner_removes_its_permissions(world: World) -> None:
    svc = world.services
    _, plaintext = svc.tokens.create(world.dev, "t", ["users.read"])
    svc.access.set_user_roles(world.admin, world.dev.user_id, ["Member"])
    result = svc.tokens.verify(plaintext, ["users.read"])
    assert result.outcome is Outcome.INSUFFICIENT_SCOPE
    assert result.scopes == frozenset()
    svc.access.set_user_roles(world.admin, world.dev.user_id, [world.dev_role_id])
    assert svc.tokens.verify(plaintext, ["users.read"]).ok


def test_a_permission_from_a_second_role_keeps_the_scope(world: World) -> None:
    svc = world.services
    _, plaintext = svc.tokens.create(world.dev, "t", ["roles.read"])
    readers = svc.access.create_role(world.admin, world.tenant_id, "Readers", ["roles.read"])
    svc.access.set_user_roles(world.admin, world.dev.user_id, [world.dev_role_id, readers.id])
    svc.access.update_role(world.admin, world.dev_role_id, ["developer.manage_tokens"])
    assert svc.tokens.verify(plaintext, ["roles.read"]).ok


# ---- outcomes -> public errors ----------------------------------------------------------------
INVALID_TOKEN_OUTCOMES = [
    Outcome.MALFORMED,
    Outcome.UNKNOWN,
    Outcome.REVOKED,
    Outcome.EXPIRED,
    Outcome.OWNER_INACTIVE,
    Outcome.PAUSED,
    Outcome.IP_NOT_ALLOWED,
]


def test_every_failure_outcome_has_a_public_error() -> None:
    failures = [o for o in Outcome if o is not Outcome.VALID]
    assert sorted(failures) == sorted([*INVALID_TOKEN_OUTCOMES, Outcome.INSUFFICIENT_SCOPE])


@pytest.mark.parametrize("outcome", INVALID_TOKEN_OUTCOMES, ids=str)
def test_for_outcome_invalid_token(outcome: Outcome) -> None:
    err = errors.for_outcome(outcome)
    assert err.code == "invalid_token"
    assert err.status == 401
    assert err.message.strip()


def test_for_outcome_messages_tell_the_outcomes_apart() -> None:
    messages = {errors.for_outcome(o).message for o in INVALID_TOKEN_OUTCOMES}
    assert len(messages) == len(INVALID_TOKEN_OUTCOMES)
    assert "revoked" in errors.for_outcome(Outcome.REVOKED).message
    assert "expired" in errors.for_outcome(Outcome.EXPIRED).message


def test_for_outcome_insufficient_scope() -> None:
    err = errors.for_outcome(Outcome.INSUFFICIENT_SCOPE, ("roles.read", "audit.read"))
    assert err.code == "insufficient_scope"
    assert err.status == 403
    assert "roles.read" in err.message and "audit.read" in err.message


def test_for_outcome_of_a_real_verification(world: World) -> None:
    view, plaintext = world.services.tokens.create(world.dev, "t", ["users.read"])
    short = world.services.tokens.verify(plaintext, ["roles.read"])
    assert errors.for_outcome(short.outcome, short.missing).code == "insufficient_scope"
    world.services.tokens.revoke(world.dev, view.id)
    gone = world.services.tokens.verify(plaintext, ["roles.read"])
    err = errors.for_outcome(gone.outcome, gone.missing)
    assert err.code == "invalid_token"
    assert_no_secret(plaintext[8:], err.message, "error message")


def test_raises_code_helper_is_strict(world: World) -> None:
    # The helper used across these tests fails when the code differs.
    with pytest.raises(AssertionError), raises_code("not_found"):
        world.services.tokens.create(world.dev, "", [])
