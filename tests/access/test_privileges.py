"""Nobody but an operator gives, takes away or hands out a permission they don't hold, or changes the
access of someone who holds more than they do (issue 13, finding 1 and 5; GitHub and GitLab behave so).

The rules are tried one by one on both backends, then exhaustively: for every combination of the seven
built-in permissions on a custom role (2^7 = 128), every way to gain a permission not held (create a
role, change a role, set roles, create a user, deactivate, reactivate) is refused and changes nothing,
while what the combination does hold stays usable. The pages and the JSON API are probed for a
representative subset of the combinations in tests/web/test_privilege_findings.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from kbai.access.catalog import BUILTIN
from kbai.errors import KbaiError
from kbai.store.audit import Actor
from tests.conftest import OPERATOR, World
from tests.tokens.helpers import raises_code
from tests.web.safety import changed_tables, snapshot

KEYS = [p.key for p in BUILTIN]
COMBOS = [frozenset(c) for n in range(len(KEYS) + 1) for c in itertools.combinations(KEYS, n)]
NOT_HELD = "permission_not_held"


def _user(world: World, email: str, roles: list[str | int], active: bool = True) -> Actor:
    svc = world.services
    view, _ = svc.access.create_user(OPERATOR, world.tenant_id, email, "probe-password-1", roles)
    if not active:
        svc.access.deactivate_user(OPERATOR, view.id)
    return world.actor(email)


def _id(world: World, email: str) -> int:
    user = world.services.access.user_by_email(email)
    assert user is not None
    return user.id


# ---- the rules, one by one (both backends) ------------------------------------------------------
def test_finding1_roles_can_hold_only_permissions_their_creator_holds(world: World) -> None:
    svc = world.services
    svc.access.create_role(OPERATOR, world.tenant_id, "Security", ["roles.read", "roles.manage", "audit.read"])
    sec = _user(world, "sec@acme.test", ["Security"])
    with raises_code(NOT_HELD) as info:
        svc.access.create_role(sec, world.tenant_id, "Everything", KEYS)
    assert info.value.status == 403
    assert "You can't give a role developer.manage_tokens, developer.review_tokens and 3 more" in info.value.message
    with raises_code(NOT_HELD) as info:
        svc.access.create_role(sec, world.tenant_id, "Mine", ["roles.read", "users.manage"])
    assert "users.manage: you don't hold it yourself" in info.value.message
    assert [r.name for r in svc.access.list_roles(OPERATOR, world.tenant_id)] == [
        "Admin",
        "Member",
        "Developers",
        "Security",
    ]
    # What Security holds, Security may put in a role.
    assert svc.access.create_role(sec, world.tenant_id, "Auditors", ["audit.read"]).permissions == ["audit.read"]


def test_finding1_a_role_you_hold_cannot_raise_you(world: World) -> None:
    """The issue's second path: [roles.read, roles.manage] on your own role, then every permission on it."""
    svc = world.services
    own = svc.access.create_role(OPERATOR, world.tenant_id, "RoleKeepers", ["roles.read", "roles.manage"])
    keeper = _user(world, "keeper@acme.test", ["RoleKeepers"])
    with raises_code(NOT_HELD):
        svc.access.update_role(keeper, own.id, KEYS)
    with raises_code(NOT_HELD):
        svc.access.update_role(keeper, own.id, ["roles.read", "roles.manage", "users.manage"])
    with raises_code(NOT_HELD):  # nor someone else's role
        svc.access.update_role(
            keeper, world.dev_role_id, ["developer.manage_tokens", "users.read", "roles.read", "users.manage"]
        )
    with raises_code("forbidden"):  # and without users.manage, no roles for anyone
        svc.access.set_user_roles(keeper, keeper.user_id, ["Admin"])  # type: ignore[arg-type]
    assert svc.access.get_role(OPERATOR, own.id).permissions == ["roles.read", "roles.manage"]
    assert world.actor("keeper@acme.test").permissions == {"roles.read", "roles.manage"}


def test_finding1_nobody_takes_away_a_permission_they_do_not_hold(world: World) -> None:
    svc = world.services
    auditors = svc.access.create_role(OPERATOR, world.tenant_id, "Auditors", ["users.read", "audit.read"])
    svc.access.create_role(OPERATOR, world.tenant_id, "RoleKeepers", ["roles.read", "roles.manage", "users.read"])
    keeper = _user(world, "keeper@acme.test", ["RoleKeepers"])
    with raises_code(NOT_HELD) as info:
        svc.access.update_role(keeper, auditors.id, ["users.read"])
    assert "take audit.read off the Auditors role: you don't hold it yourself" in info.value.message
    # users.read is the keeper's to take away from a role nobody holds ...
    assert svc.access.update_role(keeper, auditors.id, ["audit.read"]).permissions == ["audit.read"]
    # ... but not from someone who holds more than the keeper does (an auditor holds audit.read).
    svc.access.update_role(OPERATOR, auditors.id, ["users.read", "audit.read"])
    _user(world, "auditor@acme.test", ["Auditors"])
    with raises_code(NOT_HELD) as info:
        svc.access.update_role(keeper, auditors.id, ["audit.read"])
    assert "someone who has this role holds permissions you don't" in info.value.message
    assert world.actor("auditor@acme.test").permissions == {"users.read", "audit.read"}
    # Adding what the keeper holds is fine, even for people who hold more.
    assert svc.access.update_role(keeper, auditors.id, ["users.read", "roles.read", "audit.read"]).permissions == [
        "users.read",
        "roles.read",
        "audit.read",
    ]
    # And taking it off yourself is always yours to do.
    own = next(r for r in svc.access.list_roles(OPERATOR, world.tenant_id) if r.name == "RoleKeepers")
    assert svc.access.update_role(keeper, own.id, ["roles.read", "roles.manage"]).permissions == [
        "roles.read",
        "roles.manage",
    ]


def test_finding1_roles_go_only_to_and_from_people_within_your_reach(world: World) -> None:
    """The issue's first path: Helpdesk [users.read, users.manage] gives itself Security, then Admin."""
    svc = world.services
    svc.access.create_role(OPERATOR, world.tenant_id, "Helpdesk", ["users.read", "users.manage"])
    svc.access.create_role(OPERATOR, world.tenant_id, "Security", ["roles.read", "roles.manage", "audit.read"])
    desk = _user(world, "desk@acme.test", ["Helpdesk"])
    me = desk.user_id
    assert me is not None
    for roles in (["Helpdesk", "Security"], ["Helpdesk", "Admin"], ["Security"]):
        with raises_code(NOT_HELD) as info:
            svc.access.set_user_roles(desk, me, roles)
        assert "which you don't hold yourself" in info.value.message
    for roles in (["Security"], ["Admin"], [world.dev_role_id]):
        with raises_code(NOT_HELD):
            svc.access.create_user(desk, world.tenant_id, "backdoor@acme.test", "backdoor-password", roles)
    assert svc.access.user_by_email("backdoor@acme.test") is None
    # An admin, or anyone holding what Helpdesk doesn't, is out of reach: no demotion, no role change.
    admin_id = _id(world, "admin@acme.test")
    for target, roles in ((admin_id, ["Member"]), (admin_id, ["Admin", "Helpdesk"]), (world.dev.user_id, ["Member"])):
        with raises_code(NOT_HELD) as info:
            svc.access.set_user_roles(desk, target, roles)  # type: ignore[arg-type]
        assert "only someone who holds at least what they hold can change their access" in info.value.message
    assert svc.access.get_user(OPERATOR, admin_id).roles == ["Admin"]
    assert svc.access.get_user(OPERATOR, world.dev.user_id).roles == ["Developers"]
    assert world.actor("desk@acme.test").permissions == {"users.read", "users.manage"}
    # Within reach: Members, and the roles Helpdesk's permissions cover.
    member, _ = svc.access.create_user(desk, world.tenant_id, "new@acme.test", "new-password-12", ["Member"])
    assert svc.access.set_user_roles(desk, member.id, ["Helpdesk"]).roles == ["Helpdesk"]
    assert svc.access.set_user_roles(desk, member.id, ["Member"]).roles == ["Member"]


def test_finding1_the_rules_read_what_you_hold_now(world: World) -> None:
    """An actor built before their role lost roles.manage gets nothing out of the stale permissions."""
    svc = world.services
    keepers = svc.access.create_role(OPERATOR, world.tenant_id, "RoleKeepers", ["roles.read", "roles.manage"])
    stale = _user(world, "keeper@acme.test", ["RoleKeepers"])
    svc.access.update_role(OPERATOR, keepers.id, ["roles.read"])
    with raises_code("forbidden"):
        svc.access.create_role(stale, world.tenant_id, "Late", ["roles.read"])
    assert "Late" not in [r.name for r in svc.access.list_roles(OPERATOR, world.tenant_id)]


def test_finding1_operators_and_admins_keep_every_power(world: World) -> None:
    svc = world.services
    role = svc.access.create_role(world.admin, world.tenant_id, "Everything", KEYS)
    assert set(role.permissions) == set(KEYS)
    second, _ = svc.access.create_user(world.admin, world.tenant_id, "admin2@acme.test", "admin2-password", ["Admin"])
    assert svc.access.set_user_roles(world.admin, second.id, ["Admin", "Everything"]).roles == ["Admin", "Everything"]
    assert svc.access.deactivate_user(world.admin, second.id).active is False
    assert svc.access.reactivate_user(world.admin, second.id).active is True
    assert svc.access.set_user_roles(OPERATOR, second.id, ["Member"]).roles == ["Member"]


def test_finding1_the_last_active_admin_stays_protected(world: World) -> None:
    svc = world.services
    admin_id = _id(world, "admin@acme.test")
    with raises_code("last_admin"):
        svc.access.deactivate_user(world.admin, admin_id)
    with raises_code("last_admin"):
        svc.access.set_user_roles(world.admin, admin_id, ["Member"])
    assert svc.access.get_user(OPERATOR, admin_id).active


def test_finding5_only_someone_who_holds_all_they_hold_deactivates_or_reactivates_a_user(world: World) -> None:
    svc = world.services
    svc.access.create_role(OPERATOR, world.tenant_id, "Helpdesk", ["users.read", "users.manage"])
    desk = _user(world, "desk@acme.test", ["Helpdesk"])
    admin2 = _user(world, "admin2@acme.test", ["Admin"])
    _user(world, "gone@acme.test", ["Admin"], active=False)
    member = _user(world, "member@acme.test", ["Member"])
    with raises_code(NOT_HELD) as info:
        svc.access.deactivate_user(desk, admin2.user_id)  # type: ignore[arg-type]
    assert info.value.message.startswith("You can't deactivate admin2@acme.test: they hold developer.manage_tokens")
    with raises_code(NOT_HELD):
        svc.access.deactivate_user(desk, world.dev.user_id)  # type: ignore[arg-type]
    with raises_code(NOT_HELD) as info:
        svc.access.reactivate_user(desk, _id(world, "gone@acme.test"))
    assert info.value.message.startswith("You can't reactivate gone@acme.test")
    with raises_code(NOT_HELD):
        svc.access.set_password(desk, admin2.user_id, "taken-over-password")  # type: ignore[arg-type]
    assert svc.access.get_user(OPERATOR, admin2.user_id).active  # type: ignore[arg-type]
    assert not svc.access.get_user(OPERATOR, _id(world, "gone@acme.test")).active
    assert svc.access.authenticate("admin2@acme.test", "probe-password-1").id == admin2.user_id
    # Members are within reach, both ways.
    assert svc.access.deactivate_user(desk, member.user_id).active is False  # type: ignore[arg-type]
    assert svc.access.reactivate_user(desk, member.user_id).active is True  # type: ignore[arg-type]


def test_finding5_reactivation_is_audited_idempotent_and_for_this_tenant_only(world: World) -> None:
    from tests.conftest import build_world

    svc = world.services
    member = _user(world, "member@acme.test", ["Member"], active=False)
    uid = member.user_id
    assert uid is not None
    view = svc.access.reactivate_user(world.admin, uid)
    assert view.active and view.roles == ["Member"]
    assert svc.access.reactivate_user(world.admin, uid).active  # again: nothing to do
    with svc.db.read() as s:
        from kbai.store import audit

        events = [e for e in audit.events(s, world.tenant_id, limit=50) if e.action == "user.reactivate"]
    assert len(events) == 1 and events[0].details == {"email": "member@acme.test"}
    assert events[0].actor == "user:admin@acme.test"
    assert world.actor("member@acme.test").permissions == frozenset()  # Member: active, and holds nothing
    beta = build_world(svc, "Beta", "beta.test")
    svc.access.deactivate_user(world.admin, uid)
    with raises_code("not_found"):
        svc.access.reactivate_user(beta.admin, uid)
    assert not svc.access.get_user(OPERATOR, uid).active


def test_finding4_tokens_never_change_users_or_roles(world: World) -> None:
    """Below the routes too: an Actor of kind token is refused every change, whatever its scopes say."""
    svc = world.services
    token = Actor(
        kind="token",
        user_id=world.admin.user_id,
        tenant_id=world.tenant_id,
        email=world.admin.email,
        token_id=1,
        token_prefix="kbai_pk_0000",
        permissions=frozenset(KEYS),
    )
    admin_id = _id(world, "admin@acme.test")
    attempts: list[Callable[[], object]] = [
        lambda: svc.access.create_user(token, world.tenant_id, "backdoor@acme.test", "backdoor-password", ["Member"]),
        lambda: svc.access.create_user(token, world.tenant_id, "backdoor@acme.test"),
        lambda: svc.access.set_user_roles(token, world.dev.user_id, ["Admin"]),  # type: ignore[arg-type]
        lambda: svc.access.deactivate_user(token, world.dev.user_id),  # type: ignore[arg-type]
        lambda: svc.access.reactivate_user(token, world.dev.user_id),  # type: ignore[arg-type]
        lambda: svc.access.set_password(token, admin_id, "token-set-password"),
        lambda: svc.access.create_role(token, world.tenant_id, "Mine", []),
        lambda: svc.access.update_role(token, world.dev_role_id, KEYS),
    ]
    before = snapshot(svc.db)
    for attempt in attempts:
        with raises_code("session_required") as info:
            attempt()
        assert "An API token cannot" in info.value.message and info.value.status == 403
    assert changed_tables(before, snapshot(svc.db)) == []


# ---- every combination of the built-in permissions ------------------------------------------------
@dataclass
class Arena:
    """Fixed targets for the sweep: per permission p, a role holding only p, an active and a deactivated
    user holding it, and a role that also holds p for the removal probe."""

    world: World
    only: dict[str, int]  # p -> id of the role "Only p"
    active: dict[str, int]  # p -> id of an active user whose one role is "Only p"
    inactive: dict[str, int]  # p -> id of a deactivated one
    member_id: int
    member_role: int
    admin_ids: tuple[int, int]  # an active second admin, a deactivated admin


def build_arena(world: World) -> Arena:
    svc = world.services
    only, active, inactive = {}, {}, {}
    for key in KEYS:
        only[key] = svc.access.create_role(OPERATOR, world.tenant_id, f"Only {key}", [key]).id
        active[key] = _user(world, f"has.{key}@acme.test", [only[key]]).user_id
        inactive[key] = _user(world, f"had.{key}@acme.test", [only[key]], active=False).user_id
    member = _user(world, "plain.member@acme.test", ["Member"]).user_id
    admin2 = _user(world, "second.admin@acme.test", ["Admin"]).user_id
    gone = _user(world, "gone.admin@acme.test", ["Admin"], active=False).user_id
    member_role = next(r.id for r in svc.access.list_roles(OPERATOR, world.tenant_id) if r.name == "Member")
    return Arena(world, only, active, inactive, member, member_role, (admin2, gone))  # type: ignore[arg-type]


def _refused(code: str, attempt: Callable[[], object], label: str, problems: list[str]) -> None:
    try:
        attempt()
    except KbaiError as err:
        if err.code != code:
            problems.append(f"{label}: {err.code} ({err.message}), expected {code}")
        return
    problems.append(f"{label}: allowed, expected {code}")


def sweep(arena: Arena, held: frozenset[str], n: int) -> list[str]:
    """Every way for a holder of exactly ``held`` to gain a permission they don't hold; each must be refused
    and change nothing. Returns the problems found (empty: all refused)."""
    world, svc = arena.world, arena.world.services
    role = svc.access.create_role(OPERATOR, world.tenant_id, f"Combo {n}", sorted(held))
    me = _user(world, f"combo{n}@acme.test", [role.id])
    assert me.permissions == held
    uid = me.user_id
    assert uid is not None
    missing = [k for k in KEYS if k not in held]
    users_code = NOT_HELD if "users.manage" in held else "forbidden"
    roles_code = NOT_HELD if "roles.manage" in held else "forbidden"
    # A role holding what this combination holds, plus one permission it doesn't, held by someone:
    # taking any held permission off it would take it from a person who holds more.
    above_role = above_user = None
    if missing and held:
        above_role = svc.access.create_role(OPERATOR, world.tenant_id, f"Above {n}", sorted(held | {missing[0]}))
        above_user = _user(world, f"above{n}@acme.test", [above_role.id]).user_id
    problems: list[str] = []
    before = snapshot(svc.db)
    if missing:  # the ways that don't depend on which permission is missing
        _refused(
            roles_code, lambda: svc.access.update_role(me, arena.member_role, KEYS), "fill the Member role", problems
        )
        _refused(users_code, lambda: svc.access.set_user_roles(me, uid, ["Admin"]), "give self Admin", problems)
        _refused(
            users_code,
            lambda: svc.access.create_user(me, world.tenant_id, f"gain{n}@acme.test", None, ["Admin"]),
            "create an admin",
            problems,
        )
        _refused(
            users_code, lambda: svc.access.deactivate_user(me, arena.admin_ids[0]), "deactivate an admin", problems
        )
        _refused(
            users_code, lambda: svc.access.reactivate_user(me, arena.admin_ids[1]), "reactivate an admin", problems
        )
    for p in missing:
        r = arena.only[p]
        _refused(
            roles_code,
            lambda: svc.access.create_role(me, world.tenant_id, f"Gain {n} {p}", [*held, p]),
            f"create a role with {p}",
            problems,
        )
        _refused(roles_code, lambda: svc.access.update_role(me, role.id, [*held, p]), f"add {p} to own role", problems)
        _refused(roles_code, lambda: svc.access.update_role(me, r, []), f"take {p} off a role", problems)
        _refused(users_code, lambda: svc.access.set_user_roles(me, uid, [role.id, r]), f"give self {p}", problems)
        _refused(
            users_code, lambda: svc.access.set_user_roles(me, arena.member_id, [r]), f"give a member {p}", problems
        )
        _refused(
            users_code,
            lambda: svc.access.set_user_roles(me, arena.active[p], ["Member"]),
            f"change the roles of a holder of {p}",
            problems,
        )
        _refused(
            users_code,
            lambda: svc.access.create_user(me, world.tenant_id, f"gain{n}@acme.test", "gain-password-1", [r]),
            f"create a user with {p}",
            problems,
        )
        _refused(
            users_code, lambda: svc.access.deactivate_user(me, arena.active[p]), f"deactivate a holder of {p}", problems
        )
        _refused(
            users_code,
            lambda: svc.access.reactivate_user(me, arena.inactive[p]),
            f"reactivate a holder of {p}",
            problems,
        )
    if above_role is not None:
        for q in sorted(held):
            _refused(
                roles_code,
                lambda: svc.access.update_role(me, above_role.id, sorted((held | {missing[0]}) - {q})),
                f"take {q} from someone who holds more",
                problems,
            )
    changed = changed_tables(before, snapshot(svc.db))
    if changed:
        problems.append(f"refused attempts changed {changed}")
    if world.actor(me.email or "").permissions != held:
        problems.append("the holder's permissions changed")
    # What it holds stays usable (so the refusals above are the rule, not a broken service).
    if "roles.manage" in held:
        svc.access.create_role(me, world.tenant_id, f"Kept {n}", sorted(held))
    if "users.manage" in held:
        svc.access.create_user(me, world.tenant_id, f"peer{n}@acme.test", "peer-password-1", [role.id])
        if above_user is None:
            svc.access.deactivate_user(me, arena.member_id)
            svc.access.reactivate_user(me, arena.member_id)
    return [f"{sorted(held)}: {p}" for p in problems]


def test_every_combination_of_builtin_permissions_gains_nothing_it_does_not_hold(world: World, backend: str) -> None:
    """All 256 combinations on SQLite; on PostgreSQL, to keep the run short, the 15 of at most two permissions
    that hold users.manage or roles.manage (the smallest that can attempt anything, so the most refused)."""
    arena = build_arena(world)
    combos = (
        COMBOS if backend == "sqlite" else [c for c in COMBOS if {"users.manage", "roles.manage"} & c and len(c) <= 2]
    )
    problems: list[str] = []
    for n, held in enumerate(combos):
        problems += sweep(arena, held, n)
    assert len(combos) == (256 if backend == "sqlite" else 15)
    assert not problems, "\n".join(problems[:40])


def test_the_sweep_tries_every_combination() -> None:
    assert len(COMBOS) == 2**8 == len(set(COMBOS))
    assert set(KEYS) == {
        "developer.manage_tokens",
        "developer.review_tokens",
        "developer.manage_service_tokens",
        "users.read",
        "users.manage",
        "roles.read",
        "roles.manage",
        "audit.read",
    }
