"""Rule 11: every change is audited (who, what, when, from which IP), and no entry holds a token."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from kbai import tokenformat as fmt
from kbai.clock import FrozenClock
from kbai.errors import KbaiError
from kbai.services import Services
from kbai.store import audit
from kbai.store.audit import Actor
from kbai.store.models import AuditEvent
from tests.conftest import OPERATOR, World, build_world
from tests.tokens.helpers import assert_no_secret, raises_code

IP = "203.0.113.7"
T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def _events(svc: Services, **where: object) -> list[AuditEvent]:
    with svc.db.read() as s:
        query = select(AuditEvent).order_by(AuditEvent.id)
        for column, value in where.items():
            query = query.where(getattr(AuditEvent, column) == value)
        return list(s.scalars(query))


def _last(svc: Services) -> AuditEvent:
    with svc.db.read() as s:
        event = s.scalar(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1))
    assert event is not None
    return event


def _shows_prefix(shown: str, prefix: str) -> bool:
    """The audit log names a token by its 12-char display prefix (the redactor may mark it with an ellipsis)."""
    assert len(prefix) == 12
    return shown in (prefix, prefix + "…")


def _check(
    event: AuditEvent, *, action: str, actor: Actor, target_type: str, target_id: object, tenant_id: int, at: datetime
) -> None:
    assert event.action == action
    assert event.actor == actor.label
    assert event.actor_user_id == actor.user_id
    assert event.target_type == target_type
    assert event.target_id == str(target_id)
    assert event.tenant_id == tenant_id
    assert event.at == at
    assert event.ip == actor.ip


def test_tenant_create_and_its_admin_are_audited(services: Services, clock: FrozenClock) -> None:
    clock.set(T0)
    op = OPERATOR.with_ip(IP)
    tenant, admin, _ = services.access.create_tenant(op, "Acme", "admin@acme.test", "admin-password-1")
    events = _events(services)
    assert [e.action for e in events] == ["tenant.create", "user.create"]
    _check(
        events[0],
        action="tenant.create",
        actor=op,
        target_type="tenant",
        target_id=tenant.id,
        tenant_id=tenant.id,
        at=T0,
    )
    assert events[0].actor == "operator"
    assert events[0].details == {"name": "Acme", "admin": "admin@acme.test"}
    _check(
        events[1], action="user.create", actor=op, target_type="user", target_id=admin.id, tenant_id=tenant.id, at=T0
    )
    assert events[1].details["roles"] == ["Admin"]


def test_every_access_change_is_audited(world: World, clock: FrozenClock) -> None:
    svc = world.services
    admin = world.admin.with_ip(IP)
    clock.set(T0)

    view, _ = svc.access.create_user(admin, world.tenant_id, "new@acme.test", "new-password-1")
    event = _last(svc)
    _check(
        event,
        action="user.create",
        actor=admin,
        target_type="user",
        target_id=view.id,
        tenant_id=world.tenant_id,
        at=T0,
    )
    assert event.actor == "user:admin@acme.test"
    assert event.details == {"email": "new@acme.test", "roles": ["Member"]}

    clock.advance(seconds=1)
    role = svc.access.create_role(admin, world.tenant_id, "Auditors", ["audit.read"])
    event = _last(svc)
    _check(
        event,
        action="role.create",
        actor=admin,
        target_type="role",
        target_id=role.id,
        tenant_id=world.tenant_id,
        at=clock.now(),
    )
    assert event.details == {"name": "Auditors", "permissions": ["audit.read"]}

    clock.advance(seconds=1)
    svc.access.update_role(admin, role.id, ["audit.read", "users.read"])
    event = _last(svc)
    _check(
        event,
        action="role.update",
        actor=admin,
        target_type="role",
        target_id=role.id,
        tenant_id=world.tenant_id,
        at=clock.now(),
    )
    assert event.details["added"] == ["users.read"] and event.details["removed"] == []

    clock.advance(seconds=1)
    svc.access.set_user_roles(admin, view.id, [role.id])
    event = _last(svc)
    _check(
        event,
        action="user.roles",
        actor=admin,
        target_type="user",
        target_id=view.id,
        tenant_id=world.tenant_id,
        at=clock.now(),
    )
    assert event.details["roles"] == ["Auditors"]

    clock.advance(seconds=1)
    svc.access.deactivate_user(admin, view.id)
    event = _last(svc)
    _check(
        event,
        action="user.deactivate",
        actor=admin,
        target_type="user",
        target_id=view.id,
        tenant_id=world.tenant_id,
        at=clock.now(),
    )

    clock.advance(seconds=1)
    op = OPERATOR.with_ip(IP)
    dev_user = svc.access.user_by_email("dev@acme.test")
    assert dev_user is not None
    svc.access.set_limit(op, 25, user_email="dev@acme.test")
    event = _last(svc)
    _check(
        event,
        action="limit.set",
        actor=op,
        target_type="user",
        target_id=dev_user.id,
        tenant_id=world.tenant_id,
        at=clock.now(),
    )
    assert event.details == {"target": "dev@acme.test", "from": None, "to": 25}

    clock.advance(seconds=1)
    svc.access.set_limit(op, 40, tenant_name="Acme")
    event = _last(svc)
    _check(
        event,
        action="limit.set",
        actor=op,
        target_type="tenant",
        target_id=world.tenant_id,
        tenant_id=world.tenant_id,
        at=clock.now(),
    )
    assert event.details == {"target": "Acme", "from": None, "to": 40}


def test_token_changes_are_audited(world: World, clock: FrozenClock) -> None:
    svc = world.services
    dev = world.dev.with_ip(IP)
    clock.set(T0)
    view, plaintext = svc.tokens.create(dev, "Zapier", ["users.read"], expires_in_days=30)
    event = _last(svc)
    _check(
        event,
        action="token.create",
        actor=dev,
        target_type="token",
        target_id=view.id,
        tenant_id=world.tenant_id,
        at=T0,
    )
    assert event.actor == "user:dev@acme.test"
    assert _shows_prefix(event.details.pop("prefix"), plaintext[:12])
    assert event.details == {"name": "Zapier", "scopes": ["users.read"], "expires_at": "2026-04-03T05:06:07Z"}

    clock.advance(seconds=5)
    new, new_plain, _ = svc.tokens.rotate(dev, view.id, grace_period_seconds=60)
    event = _last(svc)
    _check(
        event,
        action="token.rotate",
        actor=dev,
        target_type="token",
        target_id=new.id,
        tenant_id=world.tenant_id,
        at=clock.now(),
    )
    assert event.details["from_id"] == view.id
    assert _shows_prefix(event.details["from_prefix"], plaintext[:12])
    assert _shows_prefix(event.details["to_prefix"], new_plain[:12])
    assert event.details["old_stops_at"] == "2026-03-04T05:07:12Z"

    clock.advance(seconds=5)
    svc.tokens.revoke(dev, new.id)
    event = _last(svc)
    _check(
        event,
        action="token.revoke",
        actor=dev,
        target_type="token",
        target_id=new.id,
        tenant_id=world.tenant_id,
        at=clock.now(),
    )
    assert event.details["name"] == "Zapier" and _shows_prefix(event.details["prefix"], new_plain[:12])

    clock.advance(seconds=5)
    op = OPERATOR.with_ip("198.51.100.1")
    third, _ = svc.tokens.create(dev, "other", [])
    svc.tokens.revoke(op, third.id)
    event = _last(svc)
    _check(
        event,
        action="token.revoke",
        actor=op,
        target_type="token",
        target_id=third.id,
        tenant_id=world.tenant_id,
        at=clock.now(),
    )
    assert event.ip == "198.51.100.1"


def test_a_token_revoking_itself_is_audited_with_the_token_label(world: World) -> None:
    svc = world.services
    view, plaintext = svc.tokens.create(world.dev, "self", [])
    as_token = Actor(
        kind="token",
        user_id=world.dev.user_id,
        tenant_id=world.tenant_id,
        email=world.dev.email,
        token_id=view.id,
        token_prefix=view.prefix,
        ip=IP,
    )
    svc.tokens.revoke(as_token, view.id)
    event = _last(svc)
    assert event.action == "token.revoke"
    assert event.actor.startswith("token:") and event.actor.endswith(" (dev@acme.test)")
    assert _shows_prefix(event.actor[len("token:") : -len(" (dev@acme.test)")], plaintext[:12])
    assert event.ip == IP
    assert_no_secret(plaintext[8:], event.actor, "audit actor")


def test_a_user_with_the_longest_email_is_audited(world: World) -> None:
    svc = world.services
    email = "a" * 64 + "@" + ".".join(["b" * 61, "c" * 61, "d" * 60]) + ".test"
    assert len(email) == 254
    svc.access.create_user(OPERATOR, world.tenant_id, email, "long-password-1", [world.dev_role_id])
    actor = world.actor(email).with_ip(IP)
    view, _ = svc.tokens.create(actor, "t", [])
    event = _last(svc)
    assert event.action == "token.create" and event.target_id == str(view.id)
    assert event.actor_user_id == actor.user_id and event.ip == IP
    assert actor.label.startswith(event.actor) and event.actor.startswith("user:" + "a" * 64 + "@")


def test_without_an_ip_the_event_has_none(world: World) -> None:
    world.services.tokens.create(world.dev, "t", [])
    assert _last(world.services).ip is None


def test_failed_changes_leave_no_event(world: World) -> None:
    svc = world.services
    before = len(_events(svc))
    for attempt in (
        lambda: svc.tokens.create(world.dev, "", []),
        lambda: svc.tokens.create(world.dev, "t", ["users.manage"]),
        lambda: svc.access.create_user(world.dev, world.tenant_id, "x@acme.test", "x-password-1"),
        lambda: svc.access.deactivate_user(world.admin, world.admin.user_id),
        lambda: svc.access.update_role(world.admin, 10**6, ["users.read"]),
    ):
        with pytest.raises(KbaiError):
            attempt()
    assert len(_events(svc)) == before


def test_revoking_twice_audits_once(world: World, clock: FrozenClock) -> None:
    svc = world.services
    view, _ = svc.tokens.create(world.dev, "t", [])
    svc.tokens.revoke(world.dev, view.id)
    clock.advance(seconds=10)
    svc.tokens.revoke(world.dev, view.id)
    assert len(_events(svc, action="token.revoke")) == 1


def test_events_are_per_tenant(world: World) -> None:
    svc = world.services
    beta = build_world(svc, "Beta", "beta.test")
    svc.tokens.create(beta.dev, "beta's", [])
    with svc.db.read() as s:
        acme = audit.events(s, world.tenant_id, limit=1000)
        beta_events = audit.events(s, beta.tenant_id, limit=1000)
    assert acme and beta_events
    assert {e.tenant_id for e in acme} == {world.tenant_id}
    assert {e.tenant_id for e in beta_events} == {beta.tenant_id}
    assert "token.create" in {e.action for e in beta_events}
    assert "token.create" not in {e.action for e in acme}
    assert [e.id for e in acme] == sorted((e.id for e in acme), reverse=True)  # newest first


def test_audit_details_never_hold_a_plaintext_token(world: World, clock: FrozenClock) -> None:
    svc = world.services
    issued: list[str] = []
    view, plaintext = svc.tokens.create(world.dev, "a", ["users.read"])
    issued.append(plaintext)
    _, rotated, _ = svc.tokens.rotate(world.dev, view.id, grace_period_seconds=30)
    issued.append(rotated)
    other, other_plain = svc.tokens.create(world.admin, "b", [])
    issued.append(other_plain)
    svc.tokens.revoke(world.admin, other.id)
    # Someone pastes a token into a name: refused, and nothing about it lands in the log.
    pasted = fmt.mint()
    issued.append(pasted)
    before = len(_events(svc))
    with raises_code("validation_error"):
        svc.tokens.create(world.dev, f"oops {pasted}", [])
    with raises_code("validation_error"):
        svc.access.create_role(world.admin, world.tenant_id, f"role {pasted[:60]}", [])
    assert len(_events(svc)) == before

    events = _events(svc)
    assert {"token.create", "token.rotate", "token.revoke"} <= {e.action for e in events}
    blob = "\n".join(json.dumps(e.details, ensure_ascii=False) + " " + e.actor + " " + str(e.target_id) for e in events)
    for token in issued:
        assert_no_secret(token[8:], blob, "audit log")
        assert_no_secret(token[12:60], blob, "audit log")


def test_record_redacts_token_shaped_details(world: World, clock: FrozenClock) -> None:
    svc = world.services
    token = fmt.mint()
    with svc.db.write() as s:
        audit.record(
            s,
            OPERATOR,
            "token.leak_report",
            at=clock.now(),
            target_type="token",
            target_id=1,
            tenant_id=world.tenant_id,
            details={"text": f"found {token} in a repo", "nested": {"list": [token, token.upper()]}},
        )
    event = _last(svc)
    blob = json.dumps(event.details)
    assert_no_secret(token[8:], blob, "audit details")
    assert_no_secret(token[8:].upper(), blob, "audit details")
    assert event.details["text"] == f"found {token[:12]}… in a repo"
    assert event.details["nested"]["list"][0] == f"{token[:12]}…"
