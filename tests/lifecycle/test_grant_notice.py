"""Issue 20, item 5: whoever asked an admin for a permission is told when they hold it, however it was given
(granted from the request, checked on their role, or another role given to them): the request is resolved,
an in-app notification links to API Keys, and an email goes out through the real SMTP server of these
tests. Exactly once; a dismissed request tells nobody; nothing crosses tenants. Both backends."""

from __future__ import annotations

from sqlalchemy import select

from kbai.access.requests import ACCESS_GRANTED, AdminRequests
from kbai.store.models import AdminRequest
from tests.conftest import World, build_world
from tests.lifecycle.conftest import Mailbox, subject

MEMBER = "member@acme.test"


def _member(world: World, email: str = MEMBER) -> int:
    view, _ = world.services.access.create_user(world.admin, world.tenant_id, email, "member-password-1", ["Member"])
    return view.id


def _open(world: World) -> list[tuple[str, str]]:
    with world.services.db.read() as s:
        return [
            (r.permission, str(r.user_id))
            for r in s.scalars(select(AdminRequest).where(AdminRequest.resolved_at.is_(None)))
        ]


def test_checking_the_box_on_the_role_tells_the_requester_in_app_and_by_email(world: World, mailbox: Mailbox) -> None:
    svc = world.services
    member_id = _member(world)
    requests = AdminRequests(svc.access, svc.notifications)
    assert requests.ask(world.actor(MEMBER), "developer.manage_tokens", "For Zapier")
    member_role = next(r for r in svc.access.list_roles(world.admin, world.tenant_id) if r.name == "Member")

    # The help page's way: Roles → the role → check Manage API Tokens → Save (not through the request).
    svc.access.update_role(world.admin, member_role.id, ["developer.manage_tokens"])

    assert _open(world) == []
    (note,) = svc.notifications.list(member_id)
    assert note.kind == ACCESS_GRANTED and note.title == "You have Manage API Tokens now"
    assert "Your role Member has it now." in note.body and "System Settings → API Keys" in note.body
    assert (
        note.details["link"] == "/system-settings/api-keys" and note.details["permission"] == "developer.manage_tokens"
    )
    (mail,) = mailbox.to(MEMBER)
    assert subject(mail) == "You have Manage API Tokens now"
    assert "System Settings → API Keys (/system-settings/api-keys)" in mail.get_content()

    # Exactly once: later role changes tell nobody again.
    svc.access.update_role(world.admin, member_role.id, ["developer.manage_tokens", "users.read"])
    assert len(svc.notifications.list(member_id)) == 1 and len(mailbox.to(MEMBER)) == 1


def test_a_new_role_given_to_the_requester_resolves_it_too(world: World, mailbox: Mailbox) -> None:
    svc = world.services
    member_id = _member(world)
    AdminRequests(svc.access).ask(world.actor(MEMBER), "users.read")
    svc.access.set_user_roles(world.admin, member_id, [world.dev_role_id])  # Developers holds users.read
    assert _open(world) == []
    (note,) = svc.notifications.list(member_id)
    assert note.title == "You have View users now" and "Your role Developers has it now." in note.body
    assert "Tokens you create can carry it now" in note.body
    assert [subject(m) for m in mailbox.to(MEMBER)] == ["You have View users now"]


def test_granting_from_the_request_tells_once_and_dismissing_tells_nobody(world: World, mailbox: Mailbox) -> None:
    svc = world.services
    member_id = _member(world)
    other_id = _member(world, "other@acme.test")
    requests = AdminRequests(svc.access, svc.notifications)
    requests.ask(world.actor(MEMBER), "audit.read")
    requests.ask(world.actor("other@acme.test"), "roles.read")
    by_user = {r.user_id: r for r in requests.pending(world.admin)}
    roles = dict(by_user[member_id].roles)
    assert roles  # the member's Member role
    requests.grant(world.admin, by_user[member_id].id, next(iter(roles)))
    requests.dismiss(world.admin, by_user[other_id].id)
    assert [n.title for n in svc.notifications.list(member_id)] == ["You have Read the audit log now"]
    assert svc.notifications.list(other_id) == []
    assert mailbox.subjects() == ["You have Read the audit log now"]


def test_a_grant_in_another_tenant_tells_nobody_here(world: World, mailbox: Mailbox) -> None:
    svc = world.services
    member_id = _member(world)
    AdminRequests(svc.access).ask(world.actor(MEMBER), "audit.read")
    globex = build_world(svc, tenant="Globex", domain="globex.test")
    svc.access.update_role(globex.admin, globex.dev_role_id, ["developer.manage_tokens", "audit.read"])
    assert _open(world) == [("audit.read", str(member_id))]
    assert svc.notifications.list(member_id) == [] and mailbox.messages == []
