"""The token lifecycle: create, names, scopes, expiry, the active-token limit, revoke, rotate, list.

Every test runs on SQLite and on PostgreSQL (the ``world`` fixture is parametrized by backend).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from kbai import tokenformat as fmt
from kbai.clock import FrozenClock
from kbai.errors import KbaiError
from kbai.store.models import AuditEvent, Token
from kbai.tokens.verify import Outcome
from tests.conftest import OPERATOR, World, build_world
from tests.tokens.helpers import active_in_db, assert_no_secret, make_tokens, raises_code, token_actor

SUPPORT = "support@keebai.com"


def _member(world: World, email: str = "member@acme.test"):
    world.services.access.create_user(OPERATOR, world.tenant_id, email, "member-password-1", ["Member"])
    return world.actor(email)


# ---- create -----------------------------------------------------------------------------------
def test_create_returns_the_plaintext_once_and_a_view_without_it(world: World, clock: FrozenClock) -> None:
    svc = world.services
    view, plaintext = svc.tokens.create(world.dev, "Zapier production", ["users.read"], expires_in_days=90)
    assert fmt.is_well_formed(plaintext)
    assert view.prefix == plaintext[:12]
    assert view.name == "Zapier production"
    assert view.scopes == ["users.read"]
    assert view.created_at == clock.now()
    assert view.expires_at == clock.now() + timedelta(days=90)
    assert view.last_used_at is None
    assert view.revoked_at is None
    assert view.status == "active"
    assert view.user_id == world.dev.user_id and view.tenant_id == world.tenant_id
    assert view.rotated_from_id is None
    # The view has no field for the secret, and nothing read back later holds it.
    assert {f.name for f in dataclasses.fields(view)} == {
        "id",
        "user_id",
        "tenant_id",
        "name",
        "prefix",
        "scopes",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "status",
        "rotated_from_id",
        "description",
        "allowed_ips",
        "self_rotate",
        "paused_at",
        "created_by_user_id",
        "rate_limit",
        "quota",
    }
    for later in (repr(view), repr(svc.tokens.list(world.dev.user_id)), repr(svc.tokens.get(world.dev, view.id))):
        assert_no_secret(plaintext, later, "token views")
        assert_no_secret(plaintext[8:], later, "token views")
    with svc.db.read() as s:
        row = s.get(Token, view.id)
        assert row is not None
        assert row.digest == fmt.digest(plaintext)
        assert row.prefix == plaintext[:12]
    # The plaintext is what authenticates.
    assert svc.tokens.verify(plaintext).ok


def test_two_creates_give_two_different_tokens(world: World) -> None:
    _, a = world.services.tokens.create(world.dev, "a", [])
    _, b = world.services.tokens.create(world.dev, "b", [])
    assert fmt.digest(a) != fmt.digest(b)


# ---- names ------------------------------------------------------------------------------------
def test_name_is_trimmed(world: World) -> None:
    view, _ = world.services.tokens.create(world.dev, "  n8n nightly sync \t", [])
    assert view.name == "n8n nightly sync"
    assert world.services.tokens.list(world.dev.user_id)[0].name == "n8n nightly sync"


def test_name_of_1_to_100_chars_is_accepted(world: World) -> None:
    for length in (1, 2, 99, 100):
        view, _ = world.services.tokens.create(world.dev, chr(ord("a") + length % 26) * length, [])
        assert len(view.name) == length


def test_100_chars_after_trimming_is_accepted(world: World) -> None:
    view, _ = world.services.tokens.create(world.dev, "  " + "y" * 100 + "  ", [])
    assert view.name == "y" * 100


BAD_NAMES = {
    "empty": "",
    "spaces": "   ",
    "whitespace": "\t\n",
    "101-chars": "x" * 101,
    "101-after-trim": " " + "z" * 101,
    "nul": "bad\x00name",
    "newline": "line\nbreak",
    "tab": "tab\tinside",
    "bell": "bell\x07",
    "del": "del\x7f",
    "rtl-mark": "rtl\u200fmark",
    "rtl-override": "\u202eoverride",
    "zero-width-space": "zero\u200bwidth",
    "bom": "bom\ufeff",
    "line-separator": "a\u2028b",
    "none": None,
    "int": 42,
    "list": ["list"],
}


def test_bad_names_are_refused(world: World) -> None:
    wrong: list[str] = []
    for case, name in BAD_NAMES.items():
        try:
            world.services.tokens.create(world.dev, name, [])
            wrong.append(f"{case}: accepted")
        except KbaiError as exc:
            if exc.code != "validation_error" or exc.status != 422:
                wrong.append(f"{case}: {exc.code}")
    assert wrong == []
    assert world.services.tokens.list(world.dev.user_id) == []


def test_name_is_unique_among_active_tokens_case_insensitively(world: World) -> None:
    svc = world.services
    first, _ = svc.tokens.create(world.dev, "Zapier", [])
    for clash in ("Zapier", "zapier", "ZAPIER", "  zApIeR  "):
        with raises_code("name_taken"):
            svc.tokens.create(world.dev, clash, [])
    assert len(svc.tokens.list(world.dev.user_id)) == 1
    # Once the first is revoked, the name is free again.
    svc.tokens.revoke(world.dev, first.id)
    second, _ = svc.tokens.create(world.dev, "zapier", [])
    assert second.status == "active"


def test_name_is_free_again_once_the_token_expired(world: World, clock: FrozenClock) -> None:
    svc = world.services
    svc.tokens.create(world.dev, "cron", [], expires_in_days=7)
    with raises_code("name_taken"):
        svc.tokens.create(world.dev, "cron", [])
    clock.advance(days=7)
    view, _ = svc.tokens.create(world.dev, "cron", [])
    assert view.status == "active"


def test_names_are_per_user(world: World) -> None:
    world.services.tokens.create(world.dev, "Local dev", [])
    view, _ = world.services.tokens.create(world.admin, "Local dev", [])
    assert view.name == "Local dev"


# ---- scopes -----------------------------------------------------------------------------------
def test_scopes_held_by_the_user_are_accepted(world: World) -> None:
    view, _ = world.services.tokens.create(world.dev, "t", ["roles.read", "users.read"])
    assert sorted(view.scopes) == ["roles.read", "users.read"]


@pytest.mark.parametrize("scope", ["developer.manage_tokens", "users.manage", "roles.manage"])
def test_session_only_permissions_are_refused_as_scopes_naming_them(world: World, scope: str) -> None:
    # The admin holds every permission, so the refusal is about the permission, not about holding it.
    with raises_code("session_only_scope") as info:
        world.services.tokens.create(world.admin, "t", ["users.read", scope])
    assert info.value.status == 422
    assert scope in info.value.message and "interactive session" in info.value.message
    assert world.services.tokens.list(world.admin.user_id) == []


def test_the_catalog_marks_the_session_only_permissions(world: World) -> None:
    catalog = world.services.catalog
    assert catalog.session_only == {
        "developer.manage_tokens",
        "developer.manage_service_tokens",
        "users.manage",
        "roles.manage",
    }
    assert {p.key for p in catalog.permissions if p.session_only} == catalog.session_only
    assert catalog.token_usable(world.admin.permissions) == {
        "developer.review_tokens",
        "users.read",
        "roles.read",
        "audit.read",
    }


def test_a_stored_token_never_acts_with_a_session_only_scope(world: World) -> None:
    """A token given developer.manage_tokens before the rule keeps it in storage but never acts with it."""
    svc = world.services
    view, plaintext = svc.tokens.create(world.dev, "old", ["users.read"])
    with svc.db.write() as s:
        row = s.get(Token, view.id)
        assert row is not None
        row.scopes = ["developer.manage_tokens", "users.read"]
    svc.cache.clear()
    result = svc.tokens.verify(plaintext, ["developer.manage_tokens"])
    assert result.outcome is Outcome.INSUFFICIENT_SCOPE and result.scopes == frozenset({"users.read"})
    # Rotating it does not carry the session-only scope over.
    new, _, _ = svc.tokens.rotate(world.dev, view.id)
    assert new.scopes == ["users.read"]


def test_unknown_scope_is_refused_naming_it(world: World) -> None:
    with raises_code("unknown_scope") as info:
        world.services.tokens.create(world.dev, "t", ["users.read", "contacts.read"])
    assert "contacts.read" in info.value.message
    assert info.value.status == 422
    assert world.services.tokens.list(world.dev.user_id) == []


def test_unheld_scope_is_refused_naming_it(world: World) -> None:
    with raises_code("unheld_scope") as info:
        world.services.tokens.create(world.dev, "t", ["users.read", "users.manage"])
    assert "users.manage" in info.value.message
    assert info.value.status == 422
    assert world.services.tokens.list(world.dev.user_id) == []


def test_duplicate_scope_is_refused(world: World) -> None:
    with raises_code("duplicate_scope") as info:
        world.services.tokens.create(world.dev, "t", ["users.read", "users.read"])
    assert "users.read" in info.value.message
    assert world.services.tokens.list(world.dev.user_id) == []


def test_scopes_must_be_a_list_of_keys(world: World) -> None:
    for scopes in ("users.read", None, {"users.read": True}, [1], [None], 7):
        with raises_code("validation_error"):
            world.services.tokens.create(world.dev, "t", scopes)
    assert world.services.tokens.list(world.dev.user_id) == []


# ---- who may create ---------------------------------------------------------------------------
def test_user_without_manage_tokens_is_forbidden(world: World) -> None:
    member = _member(world)
    with raises_code("forbidden") as info:
        world.services.tokens.create(member, "t", [])
    assert info.value.status == 403
    assert "developer.manage_tokens" in info.value.message
    assert world.services.tokens.list(member.user_id) == []


def test_losing_manage_tokens_forbids_creating(world: World) -> None:
    svc = world.services
    svc.tokens.create(world.dev, "before", [])
    svc.access.update_role(world.admin, world.dev_role_id, ["users.read", "roles.read"])
    with raises_code("forbidden"):
        svc.tokens.create(world.dev, "after", [])


def test_a_token_cannot_create_a_token(world: World) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "t", ["users.read"])
    as_token = token_actor(world.dev, view)
    with raises_code("session_required") as info:
        svc.tokens.create(as_token, "minted by a token", [])
    assert info.value.status == 403
    assert [t.id for t in svc.tokens.list(world.dev.user_id)] == [view.id]


def test_a_token_cannot_rotate(world: World) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "t", ["users.read"])
    with raises_code("session_required"):
        svc.tokens.rotate(token_actor(world.dev, view), view.id)
    assert svc.tokens.get(world.dev, view.id).status == "active"


def test_a_token_may_revoke_itself_but_not_a_sibling(world: World) -> None:
    svc = world.services
    a, _ = svc.tokens.create(world.dev, "a", [])
    b, _ = svc.tokens.create(world.dev, "b", [])
    with raises_code("session_required"):
        svc.tokens.revoke(token_actor(world.dev, a), b.id)
    assert svc.tokens.get(world.dev, b.id).status == "active"
    assert svc.tokens.revoke(token_actor(world.dev, a), a.id).status == "revoked"


def test_deactivated_user_cannot_create(world: World) -> None:
    svc = world.services
    actor = world.dev
    svc.access.deactivate_user(world.admin, actor.user_id)
    with raises_code("user_inactive"):
        svc.tokens.create(actor, "t", [])


# ---- expiry -----------------------------------------------------------------------------------
def test_expires_in_days(world: World, clock: FrozenClock) -> None:
    for days in (7, 30, 60, 90, 1, 3650):
        view, _ = world.services.tokens.create(world.dev, f"t{days}", [], expires_in_days=days)
        assert view.expires_at == clock.now() + timedelta(days=days)
        assert world.services.tokens.get(world.dev, view.id).expires_at == clock.now() + timedelta(days=days)


def test_expires_in_days_drops_sub_seconds(world: World, clock: FrozenClock) -> None:
    clock.advance(seconds=0.75)
    view, _ = world.services.tokens.create(world.dev, "t", [], expires_in_days=30)
    assert view.expires_at is not None and view.expires_at.microsecond == 0
    assert view.expires_at == clock.now().replace(microsecond=0) + timedelta(days=30)


def test_expires_at_a_date_or_time(world: World) -> None:
    cases = [
        ("2026-03-31", datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)),
        (" 2026-03-31 ", datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)),
        (date(2026, 3, 31), datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)),
        ("2026-02-01T08:30:00Z", datetime(2026, 2, 1, 8, 30, 0, tzinfo=UTC)),
        ("2026-02-01T10:30:00+02:00", datetime(2026, 2, 1, 8, 30, 0, tzinfo=UTC)),
        (datetime(2026, 2, 1, 8, 30, 0, tzinfo=UTC), datetime(2026, 2, 1, 8, 30, 0, tzinfo=UTC)),
        ("2026-01-01T12:00:01Z", datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)),  # one second from now
    ]
    for i, (given, expected) in enumerate(cases):
        view, _ = world.services.tokens.create(world.dev, f"t{i}", [], expires_at=given)
        assert view.expires_at == expected, given
        assert world.services.tokens.get(world.dev, view.id).expires_at == expected, given


def test_no_expiry_means_never(world: World, clock: FrozenClock) -> None:
    svc = world.services
    view, plaintext = svc.tokens.create(world.dev, "t", [])
    assert view.expires_at is None
    view2, _ = svc.tokens.create(world.dev, "t2", [], expires_in_days=None, expires_at=None)
    assert view2.expires_at is None
    clock.advance(days=365 * 20)
    assert svc.tokens.get(world.dev, view.id).status == "active"
    assert svc.tokens.verify(plaintext).ok


BAD_EXPIRY: list[dict[str, object]] = [
    {"expires_in_days": 0},
    {"expires_in_days": -1},
    {"expires_in_days": 3651},
    {"expires_in_days": True},
    {"expires_in_days": False},
    {"expires_in_days": 30.0},
    {"expires_in_days": "30"},
    {"expires_at": "2025-12-31"},
    {"expires_at": "2026-01-01T12:00:00Z"},  # exactly now
    {"expires_at": "2026-01-01T11:59:59Z"},
    {"expires_at": datetime(2025, 6, 1, tzinfo=UTC)},
    {"expires_at": date(2025, 6, 1)},
    {"expires_at": "2036-12-31"},  # more than 3650 days away
    {"expires_at": "2026-02-01T08:30:00"},  # no zone
    {"expires_at": datetime(2026, 2, 1, 8, 30)},  # naive
    {"expires_at": "tomorrow"},
    {"expires_at": "2026-02-30"},
    {"expires_at": ""},
    {"expires_at": 1767225600},
    {"expires_in_days": 30, "expires_at": "2026-03-31"},
]


def test_bad_expiry_is_refused(world: World) -> None:
    wrong: list[str] = []
    for kwargs in BAD_EXPIRY:
        try:
            world.services.tokens.create(world.dev, "t", [], **kwargs)
            wrong.append(f"{kwargs!r}: accepted")
        except KbaiError as exc:
            if exc.code != "validation_error":
                wrong.append(f"{kwargs!r}: {exc.code}")
    assert wrong == []
    assert world.services.tokens.list(world.dev.user_id) == []


# ---- the active-token limit -------------------------------------------------------------------
def test_ten_active_tokens_then_the_eleventh_is_refused(world: World) -> None:
    svc = world.services
    make_tokens(svc, world.dev, 10)
    assert active_in_db(svc, world.dev.user_id) == 10
    assert svc.tokens.allowance(world.dev.user_id) == (10, 10)
    with raises_code("token_limit_reached") as info:
        svc.tokens.create(world.dev, "eleventh", [])
    assert info.value.status == 409
    assert "10" in info.value.message
    assert "limit is 10" in info.value.message
    assert SUPPORT in info.value.message
    assert active_in_db(svc, world.dev.user_id) == 10
    assert len(svc.tokens.list(world.dev.user_id)) == 10


def test_revoking_one_frees_a_slot(world: World) -> None:
    svc = world.services
    views = make_tokens(svc, world.dev, 10)
    with raises_code("token_limit_reached"):
        svc.tokens.create(world.dev, "new", [])
    svc.tokens.revoke(world.dev, views[3].id)
    view, _ = svc.tokens.create(world.dev, "new", [])
    assert view.status == "active"
    assert active_in_db(svc, world.dev.user_id) == 10
    with raises_code("token_limit_reached"):
        svc.tokens.create(world.dev, "newer", [])


def test_an_expired_token_frees_a_slot(world: World, clock: FrozenClock) -> None:
    svc = world.services
    svc.tokens.create(world.dev, "short", [], expires_in_days=7)
    make_tokens(svc, world.dev, 9)
    with raises_code("token_limit_reached"):
        svc.tokens.create(world.dev, "new", [])
    clock.advance(days=7, seconds=-1)
    with raises_code("token_limit_reached"):
        svc.tokens.create(world.dev, "new", [])
    clock.advance(seconds=1)
    view, _ = svc.tokens.create(world.dev, "new", [])
    assert view.status == "active"
    assert active_in_db(svc, world.dev.user_id) == 10


def test_per_user_override_raises_the_limit(world: World) -> None:
    svc = world.services
    svc.access.set_limit(OPERATOR, 12, user_email="dev@acme.test")
    make_tokens(svc, world.dev, 12)
    assert svc.tokens.allowance(world.dev.user_id) == (12, 12)
    with raises_code("token_limit_reached") as info:
        svc.tokens.create(world.dev, "thirteenth", [])
    assert "limit is 12" in info.value.message
    # The admin of the same tenant keeps the default.
    make_tokens(svc, world.admin, 10)
    with raises_code("token_limit_reached"):
        svc.tokens.create(world.admin, "eleventh", [])


def test_per_tenant_override_raises_the_limit(world: World) -> None:
    svc = world.services
    svc.access.set_limit(OPERATOR, 12, tenant_name="Acme")
    make_tokens(svc, world.dev, 12)
    with raises_code("token_limit_reached") as info:
        svc.tokens.create(world.dev, "thirteenth", [])
    assert "limit is 12" in info.value.message
    # Another tenant keeps the default.
    other = build_world(svc, "Beta", "beta.test")
    make_tokens(svc, other.dev, 10)
    with raises_code("token_limit_reached"):
        svc.tokens.create(other.dev, "eleventh", [])


def test_user_override_wins_over_tenant_override_and_reset_restores_default(world: World) -> None:
    svc = world.services
    svc.access.set_limit(OPERATOR, 20, tenant_name="Acme")
    svc.access.set_limit(OPERATOR, 11, user_email="dev@acme.test")
    assert svc.tokens.allowance(world.dev.user_id) == (0, 11)
    svc.access.set_limit(OPERATOR, None, user_email="dev@acme.test")
    assert svc.tokens.allowance(world.dev.user_id) == (0, 20)
    svc.access.set_limit(OPERATOR, None, tenant_name="Acme")
    assert svc.tokens.allowance(world.dev.user_id) == (0, 10)


def test_lowering_the_limit_below_the_active_count_blocks_new_tokens(world: World) -> None:
    svc = world.services
    make_tokens(svc, world.dev, 5)
    svc.access.set_limit(OPERATOR, 3, user_email="dev@acme.test")
    with raises_code("token_limit_reached") as info:
        svc.tokens.create(world.dev, "x", [])
    assert "5 active tokens" in info.value.message and "limit is 3" in info.value.message


# ---- revoke -----------------------------------------------------------------------------------
def _events(world: World, action: str) -> int:
    with world.services.db.read() as s:
        return int(s.scalar(select(func.count(AuditEvent.id)).where(AuditEvent.action == action)) or 0)


def test_revoke_is_idempotent(world: World, clock: FrozenClock) -> None:
    svc = world.services
    view, plaintext = svc.tokens.create(world.dev, "t", [])
    first = svc.tokens.revoke(world.dev, view.id)
    assert first.status == "revoked"
    assert first.revoked_at == clock.now()
    revoked_at = first.revoked_at
    assert _events(world, "token.revoke") == 1
    clock.advance(seconds=30)
    second = svc.tokens.revoke(world.dev, view.id)
    assert second.status == "revoked"
    assert second.revoked_at == revoked_at
    assert svc.tokens.get(world.dev, view.id).revoked_at == revoked_at
    assert _events(world, "token.revoke") == 1
    assert svc.tokens.verify(plaintext).outcome is Outcome.REVOKED


def test_revoked_never_comes_back(world: World, clock: FrozenClock) -> None:
    svc = world.services
    view, plaintext = svc.tokens.create(world.dev, "t", [], expires_in_days=30)
    svc.tokens.revoke(world.dev, view.id)
    for step in (timedelta(seconds=1), timedelta(days=29), timedelta(days=400), timedelta(days=3650)):
        clock.advance(seconds=step.total_seconds())
        assert svc.tokens.get(world.dev, view.id).status == "revoked"
        assert svc.tokens.list(world.dev.user_id)[0].status == "revoked"
        assert svc.tokens.verify(plaintext).outcome is Outcome.REVOKED
    with raises_code("not_rotatable"):
        svc.tokens.rotate(world.dev, view.id)
    assert svc.tokens.verify(plaintext).outcome is Outcome.REVOKED


def test_operator_can_revoke_any_token(world: World) -> None:
    svc = world.services
    view, plaintext = svc.tokens.create(world.dev, "t", [])
    assert svc.tokens.revoke(OPERATOR, view.id).status == "revoked"
    assert svc.tokens.verify(plaintext).outcome is Outcome.REVOKED


def test_operator_can_revoke_a_deactivated_users_token(world: World) -> None:
    svc = world.services
    view, plaintext = svc.tokens.create(world.dev, "t", [])
    svc.access.deactivate_user(world.admin, world.dev.user_id)
    assert svc.tokens.revoke(OPERATOR, view.id).status == "revoked"
    assert svc.tokens.verify(plaintext).outcome is Outcome.REVOKED


# ---- rotate -----------------------------------------------------------------------------------
def test_rotate_makes_a_new_token_with_same_name_scopes_and_lifetime(world: World, clock: FrozenClock) -> None:
    svc = world.services
    old, old_plain = svc.tokens.create(world.dev, "Zapier", ["users.read", "roles.read"], expires_in_days=30)
    clock.advance(days=10)
    new, new_plain, old_after = svc.tokens.rotate(world.dev, old.id)
    assert fmt.digest(new_plain) != fmt.digest(old_plain)
    assert new.id != old.id
    assert new.name == "Zapier"
    assert sorted(new.scopes) == ["roles.read", "users.read"]
    assert new.created_at == clock.now()
    assert new.expires_at == clock.now() + timedelta(days=30)
    assert new.rotated_from_id == old.id
    assert new.prefix == new_plain[:12]
    assert new.status == "active"
    # Without a grace period the old one stops now.
    assert old_after.status == "revoked"
    assert svc.tokens.verify(old_plain).outcome is Outcome.REVOKED
    assert svc.tokens.verify(new_plain).ok
    assert svc.tokens.verify(new_plain).scopes == frozenset({"users.read", "roles.read"})


def test_rotating_a_token_without_expiry_gives_one_without_expiry(world: World) -> None:
    svc = world.services
    old, _ = svc.tokens.create(world.dev, "t", [])
    new, _, _ = svc.tokens.rotate(world.dev, old.id)
    assert new.expires_at is None


def test_rotate_grace_period_ends_exactly(world: World, clock: FrozenClock) -> None:
    svc = world.services
    old, old_plain = svc.tokens.create(world.dev, "t", ["users.read"])
    start = clock.now()
    new, new_plain, old_after = svc.tokens.rotate(world.dev, old.id, grace_period_seconds=3600)
    assert old_after.status == "active"
    assert old_after.revoked_at == start + timedelta(seconds=3600)
    assert svc.tokens.verify(old_plain).ok
    assert svc.tokens.verify(new_plain).ok
    clock.set(start + timedelta(seconds=3599))
    assert svc.tokens.verify(old_plain).ok
    assert svc.tokens.get(world.dev, old.id).status == "active"
    clock.set(start + timedelta(seconds=3600))
    assert svc.tokens.verify(old_plain).outcome is Outcome.REVOKED
    assert svc.tokens.get(world.dev, old.id).status == "revoked"
    assert svc.tokens.verify(new_plain).ok


def test_revoking_during_the_grace_period_stops_the_old_token_now(world: World, clock: FrozenClock) -> None:
    svc = world.services
    old, old_plain = svc.tokens.create(world.dev, "t", [])
    svc.tokens.rotate(world.dev, old.id, grace_period_seconds=3600)
    clock.advance(seconds=10)
    assert svc.tokens.revoke(world.dev, old.id).revoked_at == clock.now()
    assert svc.tokens.verify(old_plain).outcome is Outcome.REVOKED


def test_bad_grace_period_is_refused(world: World) -> None:
    svc = world.services
    old, old_plain = svc.tokens.create(world.dev, "t", [])
    for grace in (-1, 7 * 24 * 3600 + 1, 1.5, True, "60", None):
        with raises_code("validation_error"):
            svc.tokens.rotate(world.dev, old.id, grace_period_seconds=grace)
    assert [t.id for t in svc.tokens.list(world.dev.user_id)] == [old.id]
    assert svc.tokens.verify(old_plain).ok


def test_longest_grace_period_is_accepted(world: World, clock: FrozenClock) -> None:
    svc = world.services
    old, _ = svc.tokens.create(world.dev, "t", [])
    _, _, old_after = svc.tokens.rotate(world.dev, old.id, grace_period_seconds=7 * 24 * 3600)
    assert old_after.revoked_at == clock.now() + timedelta(days=7)


def test_rotating_at_the_limit_without_grace_keeps_the_count(world: World) -> None:
    svc = world.services
    views = make_tokens(svc, world.dev, 10)
    new, _, old = svc.tokens.rotate(world.dev, views[0].id)
    assert new.status == "active" and old.status == "revoked"
    assert active_in_db(svc, world.dev.user_id) == 10


def test_rotating_with_a_grace_period_works_at_the_limit(world: World, clock: FrozenClock) -> None:
    # Changed from the old rule (a grace period needed a free slot): a token in its grace period after a
    # rotation does not count toward the limit, so rotating with an overlap works at 10 of 10.
    svc = world.services
    views = make_tokens(svc, world.dev, 10)
    new, new_plain, old = svc.tokens.rotate(world.dev, views[0].id, grace_period_seconds=86400)
    assert old.status == "active" and old.revoked_at == clock.now() + timedelta(days=1)
    assert svc.tokens.allowance(world.dev.user_id) == (10, 10)
    assert active_in_db(svc, world.dev.user_id) == 11  # both work during the overlap
    # ... but no new token can be created while at 10 counted.
    with raises_code("token_limit_reached") as info:
        svc.tokens.create(world.dev, "eleventh", [])
    assert "You have 10 active tokens; the limit is 10." in info.value.message


def test_a_chain_never_holds_more_than_two_working_tokens(world: World, clock: FrozenClock) -> None:
    svc = world.services
    first, first_plain = svc.tokens.create(world.dev, "Zapier", ["users.read"])
    second, second_plain, _ = svc.tokens.rotate(world.dev, first.id, grace_period_seconds=3600)
    clock.advance(seconds=10)
    third, third_plain, second_after = svc.tokens.rotate(world.dev, second.id, grace_period_seconds=3600)
    # Rotating the second ends the first's grace at once; the second now has its own.
    assert svc.tokens.verify(first_plain).outcome is Outcome.REVOKED
    assert svc.tokens.get(world.dev, first.id).revoked_at == clock.now()
    assert svc.tokens.verify(second_plain).ok and svc.tokens.verify(third_plain).ok
    assert second_after.revoked_at == clock.now() + timedelta(seconds=3600)
    assert svc.tokens.allowance(world.dev.user_id) == (1, 10)
    with svc.db.read() as s:
        event = s.scalars(
            select(AuditEvent).where(AuditEvent.action == "token.rotate", AuditEvent.target_id == str(third.id))
        ).one()
    assert event.details["ended_grace_of"] == first.id


def test_rotating_an_already_rotated_token_is_refused_naming_its_successor(world: World, clock: FrozenClock) -> None:
    svc = world.services
    old, _ = svc.tokens.create(world.dev, "t", ["users.read"])
    new, _, _ = svc.tokens.rotate(world.dev, old.id, grace_period_seconds=3600)
    for grace_over in (False, True):
        if grace_over:
            clock.advance(seconds=3600)
        with raises_code("already_rotated") as info:
            svc.tokens.rotate(world.dev, old.id, grace_period_seconds=60)
        assert info.value.status == 409 and f"token {new.id}" in info.value.message
    assert [t.id for t in svc.tokens.list(world.dev.user_id)] == [new.id, old.id]


def test_rotating_a_revoked_token_is_refused(world: World) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "t", [])
    svc.tokens.revoke(world.dev, view.id)
    with raises_code("not_rotatable") as info:
        svc.tokens.rotate(world.dev, view.id)
    assert "revoked" in info.value.message
    assert len(svc.tokens.list(world.dev.user_id)) == 1


def test_rotating_an_expired_token_is_refused(world: World, clock: FrozenClock) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "t", [], expires_in_days=7)
    clock.advance(days=7)
    with raises_code("not_rotatable") as info:
        svc.tokens.rotate(world.dev, view.id)
    assert "expired" in info.value.message
    assert len(svc.tokens.list(world.dev.user_id)) == 1


def test_a_user_with_a_long_email_can_create_rotate_and_revoke(world: World) -> None:
    # The longest addresses clean_email accepts (254 chars) must not break the audit log or revoked_by.
    svc = world.services
    email = "a" * 64 + "@" + ".".join(["b" * 61, "c" * 61, "d" * 60]) + ".test"
    assert len(email) == 254
    svc.access.create_user(OPERATOR, world.tenant_id, email, "long-password-1", [world.dev_role_id])
    actor = world.actor(email)
    view, plaintext = svc.tokens.create(actor, "t", ["users.read"])
    new, new_plain, _ = svc.tokens.rotate(actor, view.id, grace_period_seconds=60)
    assert svc.tokens.revoke(actor, new.id).status == "revoked"
    assert svc.tokens.verify(new_plain).outcome is Outcome.REVOKED
    assert svc.tokens.revoke(token_actor(actor, view), view.id).status == "revoked"
    assert svc.tokens.verify(plaintext).outcome is Outcome.REVOKED


# ---- other users' tokens (IDOR) ---------------------------------------------------------------
def test_other_users_token_is_not_found(world: World) -> None:
    svc = world.services
    view, plaintext = svc.tokens.create(world.dev, "dev's", [])
    other_tenant = build_world(svc, "Beta", "beta.test")
    for outsider in (world.admin, _member(world), other_tenant.admin, other_tenant.dev):
        with raises_code("not_found"):
            svc.tokens.get(outsider, view.id)
        with raises_code("not_found"):
            svc.tokens.revoke(outsider, view.id)
        with raises_code("not_found"):
            svc.tokens.rotate(outsider, view.id)
    assert svc.tokens.get(world.dev, view.id).status == "active"
    assert svc.tokens.verify(plaintext).ok
    assert len(svc.tokens.list(world.dev.user_id)) == 1


def test_unknown_token_id_is_not_found(world: World) -> None:
    svc = world.services
    for bad in (999_999, -1, 0):
        with raises_code("not_found"):
            svc.tokens.get(world.dev, bad)
        with raises_code("not_found"):
            svc.tokens.revoke(world.dev, bad)
        with raises_code("not_found"):
            svc.tokens.rotate(world.dev, bad)


def test_not_found_reads_the_same_for_missing_and_foreign_ids(world: World) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.admin, "admin's", [])
    with raises_code("not_found") as foreign:
        svc.tokens.get(world.dev, view.id)
    with raises_code("not_found") as missing:
        svc.tokens.get(world.dev, 999_999)
    assert foreign.value.message == missing.value.message


# ---- list -------------------------------------------------------------------------------------
def test_list_returns_all_statuses_newest_first(world: World, clock: FrozenClock) -> None:
    svc = world.services
    revoked, _ = svc.tokens.create(world.dev, "revoked one", [])
    clock.advance(seconds=1)
    expiring, _ = svc.tokens.create(world.dev, "expiring one", [], expires_in_days=7)
    clock.advance(seconds=1)
    rotated, _ = svc.tokens.create(world.dev, "rotated one", ["users.read"])
    clock.advance(seconds=1)
    active, _ = svc.tokens.create(world.dev, "active one", [])
    svc.tokens.revoke(world.dev, revoked.id)
    successor, _, _ = svc.tokens.rotate(world.dev, rotated.id)
    svc.tokens.create(world.admin, "not dev's", [])
    clock.advance(days=8)
    listed = svc.tokens.list(world.dev.user_id)
    assert [(t.id, t.name, t.status) for t in listed] == [
        (successor.id, "rotated one", "active"),
        (active.id, "active one", "active"),
        (rotated.id, "rotated one", "revoked"),
        (expiring.id, "expiring one", "expired"),
        (revoked.id, "revoked one", "revoked"),
    ]
    assert {t.status for t in listed} <= {"active", "expired", "revoked"}


def test_list_pages_with_a_cursor(world: World) -> None:
    svc = world.services
    views = make_tokens(svc, world.dev, 5)
    first = svc.tokens.list(world.dev.user_id, limit=2)
    assert [t.id for t in first] == [views[4].id, views[3].id]
    rest = svc.tokens.list(world.dev.user_id, before_id=first[-1].id, limit=10)
    assert [t.id for t in rest] == [views[2].id, views[1].id, views[0].id]
