"""Per-token restrictions in the token core: pause and resume, changes after creation (PATCH), the IP
allowlist in the verification pipeline, and the tenant policy that requires one.

Every test that touches storage runs on SQLite and on PostgreSQL (the ``world`` fixture).
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from kbai.clock import FrozenClock
from kbai.store.models import AuditEvent
from kbai.tokens.restrictions import clean_allowlist, ip_allowed, networks
from kbai.tokens.verify import Outcome
from tests.conftest import OPERATOR, World
from tests.tokens.helpers import raises_code, token_actor


def _actions(world: World, token_id: int) -> list[str]:
    with world.services.db.read() as s:
        return list(
            s.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.target_type == "token", AuditEvent.target_id == str(token_id))
                .order_by(AuditEvent.id)
            )
        )


# ---- pause and resume -------------------------------------------------------------------------
def test_paused_token_is_refused_and_works_again_after_resume(world: World) -> None:
    svc = world.services
    view, plaintext = svc.tokens.create(world.dev, "cron", ["users.read"])
    paused = svc.tokens.pause(world.dev, view.id)
    assert paused.status == "paused" and paused.paused_at is not None
    assert svc.tokens.verify(plaintext).outcome is Outcome.PAUSED
    assert svc.tokens.list(world.dev.user_id)[0].status == "paused"
    resumed = svc.tokens.resume(world.dev, view.id)
    assert resumed.status == "active" and resumed.paused_at is None
    assert svc.tokens.verify(plaintext).ok
    assert _actions(world, view.id) == ["token.create", "token.pause", "token.resume"]


def test_pause_and_resume_are_idempotent_and_audit_once(world: World) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "cron", [])
    svc.tokens.pause(world.dev, view.id)
    svc.tokens.pause(world.dev, view.id)
    svc.tokens.resume(world.dev, view.id)
    svc.tokens.resume(world.dev, view.id)
    assert _actions(world, view.id) == ["token.create", "token.pause", "token.resume"]


def test_revoke_after_pause_is_final(world: World) -> None:
    svc = world.services
    view, plaintext = svc.tokens.create(world.dev, "cron", [])
    svc.tokens.pause(world.dev, view.id)
    assert svc.tokens.revoke(world.dev, view.id).status == "revoked"
    with raises_code("not_resumable") as info:
        svc.tokens.resume(world.dev, view.id)
    assert "never comes back" in info.value.message
    with raises_code("not_pausable"):
        svc.tokens.pause(world.dev, view.id)
    assert svc.tokens.verify(plaintext).outcome is Outcome.REVOKED


def test_an_expired_token_cannot_be_paused_or_resumed(world: World, clock: FrozenClock) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "cron", [], expires_in_days=1)
    svc.tokens.pause(world.dev, view.id)
    clock.advance(days=2)
    assert svc.tokens.get(world.dev, view.id).status == "expired"
    with raises_code("not_resumable"):
        svc.tokens.resume(world.dev, view.id)


def test_a_paused_token_still_counts_toward_the_limit(world: World) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "one", [])
    svc.tokens.pause(world.dev, view.id)
    active, _limit = svc.tokens.allowance(world.dev.user_id)
    assert active == 1


def test_an_admin_reviewer_may_pause_and_resume_another_members_token(world: World) -> None:
    svc = world.services
    view, plaintext = svc.tokens.create(world.dev, "cron", [])
    assert svc.tokens.pause(world.admin, view.id).status == "paused"
    assert svc.tokens.resume(world.admin, view.id).status == "active"
    assert svc.tokens.verify(plaintext).ok


def test_a_member_without_review_permission_cannot_pause_someone_elses_token(world: World) -> None:
    svc = world.services
    svc.access.create_user(OPERATOR, world.tenant_id, "m@acme.test", "member-password-1", ["Member"])
    member = world.actor("m@acme.test")
    view, _ = svc.tokens.create(world.dev, "cron", [])
    with raises_code("not_found"):
        svc.tokens.pause(member, view.id)
    assert svc.tokens.get(world.dev, view.id).status == "active"


def test_a_token_may_pause_itself_but_never_resume(world: World) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "cron", [])
    me = token_actor(world.dev, view)
    assert svc.tokens.pause(me, view.id).status == "paused"
    with raises_code("session_required"):
        svc.tokens.resume(me, view.id)


def test_a_paused_token_cannot_be_rotated(world: World) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "cron", [])
    svc.tokens.pause(world.dev, view.id)
    with raises_code("not_rotatable") as info:
        svc.tokens.rotate(world.dev, view.id)
    assert "paused" in info.value.message


def test_pause_is_announced_to_listeners(world: World) -> None:
    svc = world.services
    heard: list[set[str]] = []
    svc.tokens.listeners.append(lambda digests, _users: heard.append(set(digests)))
    view, _ = svc.tokens.create(world.dev, "cron", [])
    svc.tokens.pause(world.dev, view.id)
    svc.tokens.resume(world.dev, view.id)
    assert len(heard) >= 2 and all(len(d) == 1 for d in heard[-2:])


# ---- description and changes after creation -----------------------------------------------------
def test_description_is_kept_trimmed_and_bounded(world: World) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "cron", [], description="  Posts contacts\r\nto the CRM ")
    assert view.description == "Posts contacts\nto the CRM"
    with raises_code("validation_error"):
        svc.tokens.create(world.dev, "long", [], description="x" * 501)
    with raises_code("validation_error"):
        svc.tokens.create(world.dev, "ctl", [], description="a\u202eb")
    assert svc.tokens.create(world.dev, "max", [], description="x" * 500)[0].description == "x" * 500


def test_update_changes_name_description_and_allowlist(world: World) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "cron", ["users.read", "roles.read"])
    out = svc.tokens.update(
        world.dev, view.id, {"name": "nightly", "description": "note", "allowed_ips": ["10.0.0.0/8"]}
    )
    assert (out.name, out.description, out.allowed_ips) == ("nightly", "note", ["10.0.0.0/8"])
    assert _actions(world, view.id)[-1] == "token.update"
    out = svc.tokens.update(world.dev, view.id, {"description": None, "allowed_ips": []})
    assert out.description is None and out.allowed_ips is None


def test_scopes_can_only_shrink(world: World) -> None:
    svc = world.services
    view, plaintext = svc.tokens.create(world.dev, "cron", ["users.read"])
    with raises_code("scopes_only_shrink"):
        svc.tokens.update(world.dev, view.id, {"scopes": ["users.read", "roles.read"]})
    assert svc.tokens.update(world.dev, view.id, {"scopes": []}).scopes == []
    assert svc.tokens.verify(plaintext, ["users.read"]).outcome is Outcome.INSUFFICIENT_SCOPE


def test_expiry_can_only_come_earlier(world: World, clock: FrozenClock) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "cron", [], expires_in_days=30)
    with raises_code("expiry_only_shorter"):
        svc.tokens.update(world.dev, view.id, {"expires_in_days": 60})
    with raises_code("expiry_only_shorter"):
        svc.tokens.update(world.dev, view.id, {"expires_at": None})
    out = svc.tokens.update(world.dev, view.id, {"expires_in_days": 7})
    assert out.expires_at == clock.now() + timedelta(days=7)
    never, _ = svc.tokens.create(world.dev, "never", [])
    assert svc.tokens.update(world.dev, never.id, {"expires_in_days": 90}).expires_at is not None


def test_renaming_onto_another_active_name_is_refused(world: World) -> None:
    svc = world.services
    svc.tokens.create(world.dev, "taken", [])
    view, _ = svc.tokens.create(world.dev, "cron", [])
    with raises_code("name_taken"):
        svc.tokens.update(world.dev, view.id, {"name": "TAKEN"})


def test_update_needs_the_owners_session(world: World) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "cron", [])
    with raises_code("session_required"):
        svc.tokens.update(token_actor(world.dev, view), view.id, {"name": "x"})
    with raises_code("not_found"):
        svc.tokens.update(world.admin, view.id, {"name": "x"})


def test_a_revoked_token_cannot_be_changed(world: World) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "cron", [])
    svc.tokens.revoke(world.dev, view.id)
    with raises_code("not_editable"):
        svc.tokens.update(world.dev, view.id, {"description": "x"})


# ---- the IP allowlist ---------------------------------------------------------------------------
def test_allowlist_is_normalised_deduplicated_and_bounded() -> None:
    assert clean_allowlist(["10.1.2.3/24", "10.1.2.0/24", "2001:DB8::1", "192.0.2.7"]) == [
        "10.1.2.0/24",
        "2001:db8::1/128",
        "192.0.2.7/32",
    ]
    assert clean_allowlist([]) is None and clean_allowlist(None) is None
    with raises_code("invalid_cidr"):
        clean_allowlist(["10.0.0.0/33"])
    with raises_code("invalid_cidr"):
        clean_allowlist(["example.com"])
    with raises_code("validation_error"):
        clean_allowlist([f"10.0.{i}.0/24" for i in range(51)])
    assert len(clean_allowlist([f"10.0.{i}.0/24" for i in range(50)]) or []) == 50
    with raises_code("validation_error"):
        clean_allowlist("10.0.0.0/8")
    with raises_code("validation_error"):
        clean_allowlist([7])


def test_ip_allowed_handles_both_families_and_mapped_addresses() -> None:
    allowed = networks(("203.0.113.0/24", "2001:db8::/32"))
    assert ip_allowed(allowed, "203.0.113.9")
    assert ip_allowed(allowed, "::ffff:203.0.113.9")
    assert ip_allowed(allowed, "2001:db8:1::5")
    assert not ip_allowed(allowed, "198.51.100.1")
    assert not ip_allowed(allowed, "2001:db9::1")
    assert not ip_allowed(allowed, "unknown")


@given(
    cidrs=st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(lambda t: f"{ipaddress.IPv4Address(t[0])}/{t[1]}"),
        min_size=1,
        max_size=50,
    ),
    probes=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=20),
)
def test_ip_allowed_agrees_with_plain_membership(cidrs: list[str], probes: list[int]) -> None:
    """The merged-span lookup answers exactly what ``address in network`` would, for any list of ranges."""
    allowed = networks(tuple(cidrs))
    for probe in probes:
        address = ipaddress.IPv4Address(probe)
        assert ip_allowed(allowed, str(address)) == any(address in n for n in allowed)


def test_verification_refuses_an_address_outside_the_allowlist(world: World) -> None:
    svc = world.services
    view, plaintext = svc.tokens.create(world.dev, "cron", [], allowed_ips=["203.0.113.0/24", "2001:db8::/32"])
    assert view.allowed_ips == ["203.0.113.0/24", "2001:db8::/32"]
    assert svc.tokens.verify(plaintext, client_ip="203.0.113.5").ok
    assert svc.tokens.verify(plaintext, client_ip="2001:db8::9").ok
    assert svc.tokens.verify(plaintext, client_ip="198.51.100.1").outcome is Outcome.IP_NOT_ALLOWED
    # Introspection and the SDK pass no address: the record carries the list for them to enforce.
    result = svc.tokens.verify(plaintext)
    assert result.ok and result.record is not None and result.record.allowed_ips == ("203.0.113.0/24", "2001:db8::/32")


def test_changing_the_allowlist_applies_at_once(world: World) -> None:
    svc = world.services
    view, plaintext = svc.tokens.create(world.dev, "cron", [])
    assert svc.tokens.verify(plaintext, client_ip="198.51.100.1").ok
    svc.tokens.update(world.dev, view.id, {"allowed_ips": ["203.0.113.0/24"]})
    assert svc.tokens.verify(plaintext, client_ip="198.51.100.1").outcome is Outcome.IP_NOT_ALLOWED


def test_tenant_policy_can_require_an_allowlist_on_new_tokens(world: World) -> None:
    svc = world.services
    old, _ = svc.tokens.create(world.dev, "before", [])
    svc.policies.set(world.admin, world.tenant_id, require_allowlist=True)
    with raises_code("policy_allowlist_required"):
        svc.tokens.create(world.dev, "cron", [])
    assert svc.tokens.create(world.dev, "cron", [], allowed_ips=["10.0.0.0/8"])[0].allowed_ips == ["10.0.0.0/8"]
    # A token made before the rule keeps working; one with a list cannot drop it while the rule holds.
    assert svc.tokens.get(world.dev, old.id).status == "active"
    listed = svc.tokens.create(world.dev, "listed", [], allowed_ips=["10.0.0.0/8"])[0]
    with raises_code("policy_allowlist_required"):
        svc.tokens.update(world.dev, listed.id, {"allowed_ips": None})


def test_rotation_keeps_the_restrictions(world: World) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "cron", [], description="d", allowed_ips=["10.0.0.0/8"], self_rotate=True)
    new, _plain, _old = svc.tokens.rotate(world.dev, view.id)
    assert (new.description, new.allowed_ips, new.self_rotate) == ("d", ["10.0.0.0/8"], True)


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_self_rotate_must_be_a_boolean(world: World, bad: object) -> None:
    with raises_code("validation_error"):
        world.services.tokens.create(world.dev, "cron", [], self_rotate=bad)
