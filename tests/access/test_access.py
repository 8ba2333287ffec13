"""Tenants, users, roles, the permission catalog and who may do what. Both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from kbai.access.catalog import BUILTIN, Catalog, CatalogError
from kbai.clock import FrozenClock
from kbai.config import Settings
from kbai.services import Services
from kbai.store.models import Person, Role, Tenant, User
from tests.conftest import FAST_ARGON2, OPERATOR, World, build_world
from tests.tokens.helpers import raises_code

BUILTIN_KEYS = {
    "developer.manage_tokens",
    "developer.review_tokens",
    "developer.manage_service_tokens",
    "users.read",
    "users.manage",
    "roles.read",
    "roles.manage",
    "audit.read",
}
OPERATOR_TOML = """
[groups.Contacts]
"contacts.read" = "Read contacts"
"contacts.write" = "Edit contacts"

[groups.Billing]
"billing.invoices.read" = "Read invoices"
"""


def _role(world: World, name: str):
    return next(r for r in world.services.access.list_roles(world.admin, world.tenant_id) if r.name == name)


def _user_id(world: World, email: str) -> int:
    user = world.services.access.user_by_email(email)
    assert user is not None
    return user.id


# ---- tenants and the catalog ------------------------------------------------------------------
def test_create_tenant_makes_admin_and_member_roles(services: Services) -> None:
    tenant, admin, generated = services.access.create_tenant(OPERATOR, "Acme", "Admin@Acme.test", "admin-password-1")
    assert generated is None
    assert tenant.name == "Acme"
    assert admin.email == "admin@acme.test"
    roles = services.access.list_roles(OPERATOR, tenant.id)
    assert [(r.name, r.builtin) for r in roles] == [("Admin", True), ("Member", True)]
    admin_role, member_role = roles
    assert set(admin_role.permissions) == BUILTIN_KEYS
    assert member_role.permissions == []
    view = services.access.get_user(OPERATOR, admin.id)
    assert view.roles == ["Admin"] and view.active
    with services.db.read() as s:
        user = s.get(User, admin.id)
        assert user is not None
        assert services.access.permissions(s, user) == frozenset(BUILTIN_KEYS)


def test_create_tenant_generates_a_password_when_none_is_given(services: Services) -> None:
    _, admin, generated = services.access.create_tenant(OPERATOR, "Acme", "admin@acme.test")
    assert generated is not None and len(generated) >= 16
    assert services.access.authenticate("admin@acme.test", generated).id == admin.id


def test_duplicate_tenant_is_refused(services: Services) -> None:
    services.access.create_tenant(OPERATOR, "Acme", "admin@acme.test", "admin-password-1")
    with raises_code("already_exists"):
        services.access.create_tenant(OPERATOR, "Acme", "other@acme.test", "admin-password-1")
    with raises_code("person_has_password"):  # an existing person keeps their own password
        services.access.create_tenant(OPERATOR, "Other", "admin@acme.test", "admin-password-1")
    with services.db.read() as s:
        assert s.scalar(select(func.count(Tenant.id))) == 1
        assert s.scalar(select(func.count(User.id))) == 1


def test_create_tenant_validates_its_input(services: Services) -> None:
    for bad in ({"name": ""}, {"name": "x" * 101}, {"email": "not-an-email"}, {"password": "short"}):
        args = {"name": "Acme", "email": "admin@acme.test", "password": "admin-password-1", **bad}
        with raises_code("validation_error"):
            services.access.create_tenant(OPERATOR, args["name"], args["email"], args["password"])
    with services.db.read() as s:
        assert s.scalar(select(func.count(Tenant.id))) == 0
        assert s.scalar(select(func.count(User.id))) == 0


def test_builtin_catalog() -> None:
    catalog = Catalog.load(None)
    assert catalog.keys == frozenset(BUILTIN_KEYS)
    manage = catalog.get("developer.manage_tokens")
    assert manage is not None and manage.label == "Manage API Tokens" and manage.group == "Developer"
    assert [g for g, _ in catalog.groups()] == ["Developer", "Users", "Roles", "Audit"]


@pytest.fixture
def toml_services(database_url: str, clock: FrozenClock, tmp_path: Path) -> Iterator[Services]:
    path = tmp_path / "permissions.toml"
    path.write_text(OPERATOR_TOML, encoding="utf-8")
    svc = Services.build(Settings(database_url=database_url, permissions_file=path, **FAST_ARGON2), clock=clock)
    yield svc
    svc.close()


def test_admin_role_has_every_permission_including_operator_ones(toml_services: Services) -> None:
    svc = toml_services
    expected = BUILTIN_KEYS | {"contacts.read", "contacts.write", "billing.invoices.read"}
    assert svc.catalog.keys == frozenset(expected)
    assert dict(svc.catalog.groups())["Contacts"][0].label == "Read contacts"
    tenant, admin, _ = svc.access.create_tenant(OPERATOR, "Acme", "admin@acme.test", "admin-password-1")
    admin_role = svc.access.list_roles(OPERATOR, tenant.id)[0]
    assert admin_role.name == "Admin"
    assert set(admin_role.permissions) == expected
    with svc.db.read() as s:
        user = s.get(User, admin.id)
        assert user is not None
        assert svc.access.permissions(s, user) == frozenset(expected)
    # An operator permission can go on a custom role, and a token can carry it.
    world = build_world(svc, "Beta", "beta.test")
    role = svc.access.create_role(world.admin, world.tenant_id, "Sales", ["contacts.read", "developer.manage_tokens"])
    assert role.permissions == ["developer.manage_tokens", "contacts.read"]
    svc.access.create_user(world.admin, world.tenant_id, "sales@beta.test", "sales-password-1", [role.id])
    sales = world.actor("sales@beta.test")
    _, plaintext = svc.tokens.create(sales, "crm sync", ["contacts.read"])
    assert svc.tokens.verify(plaintext, ["contacts.read"]).ok


def test_operator_permissions_are_unknown_without_the_file(world: World) -> None:
    with raises_code("unknown_permission") as info:
        world.services.access.create_role(world.admin, world.tenant_id, "Sales", ["contacts.read"])
    assert "contacts.read" in info.value.message


@pytest.mark.parametrize(
    "content",
    [
        "this is [not toml",
        "",
        "[other]\nx = 1\n",
        "groups = 3\n",
        '[groups]\nContacts = "x"\n',
        '[groups.Contacts]\n"Contacts.Read" = "Read"\n',
        '[groups.Contacts]\n"contacts" = "Read"\n',
        '[groups.Contacts]\n"contacts read" = "Read"\n',
        '[groups.Contacts]\n"contacts.read" = ""\n',
        '[groups.Contacts]\n"contacts.read" = 3\n',
        '[groups.Mine]\n"users.read" = "Redefined"\n',
        '[groups.A]\n"contacts.read" = "A"\n[groups.B]\n"contacts.read" = "B"\n',
        b"\xff\xfe[groups.X]",
    ],
    ids=[
        "syntax",
        "empty",
        "no-groups",
        "groups-not-table",
        "group-not-table",
        "upper-case-key",
        "no-dot",
        "space",
        "empty-label",
        "label-not-str",
        "redefines-builtin",
        "defined-twice",
        "not-utf8",
    ],
)
def test_bad_toml_is_a_catalog_error(tmp_path: Path, content: str | bytes) -> None:
    path = tmp_path / "permissions.toml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(CatalogError) as info:
        Catalog.load(path)
    assert str(path) in str(info.value)


def test_missing_toml_file_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError):
        Catalog.load(tmp_path / "nope.toml")


def test_bad_toml_stops_services_from_building(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "permissions.toml"
    path.write_text('[groups.Contacts]\n"Bad Key" = "x"\n', encoding="utf-8")
    with pytest.raises(CatalogError):
        Services.build(Settings(database_url=database_url, permissions_file=path, **FAST_ARGON2))


def test_builtin_tuple_is_untouched_by_loading(tmp_path: Path) -> None:
    path = tmp_path / "permissions.toml"
    path.write_text(OPERATOR_TOML, encoding="utf-8")
    Catalog.load(path)
    assert {p.key for p in BUILTIN} == BUILTIN_KEYS
    assert Catalog().keys == frozenset(BUILTIN_KEYS)


# ---- users ------------------------------------------------------------------------------------
def test_create_user_defaults_to_member(world: World) -> None:
    view, generated = world.services.access.create_user(world.admin, world.tenant_id, "new@acme.test")
    assert view.roles == ["Member"]
    assert view.active and view.email == "new@acme.test"
    assert generated is not None
    assert world.services.access.authenticate("new@acme.test", generated).id == view.id
    assert world.actor("new@acme.test").permissions == frozenset()


def test_create_user_with_named_and_id_roles(world: World) -> None:
    view, _ = world.services.access.create_user(
        world.admin, world.tenant_id, "both@acme.test", "both-password-1", ["Member", world.dev_role_id]
    )
    assert view.roles == ["Developers", "Member"]
    assert world.actor("both@acme.test").permissions == frozenset(
        {"developer.manage_tokens", "users.read", "roles.read"}
    )


def test_duplicate_email_is_refused_in_a_tenant_and_another_tenant_gets_the_same_person(world: World) -> None:
    svc = world.services
    for email in ("dev@acme.test", "DEV@acme.test", " dev@ACME.test "):
        with raises_code("already_exists"):
            svc.access.create_user(world.admin, world.tenant_id, email)
    # Emails are one person's, not one tenant's: another tenant adds the same person (finding 7), who keeps
    # their own password (none is generated, and setting one is refused).
    beta = build_world(svc, "Beta", "beta.test")
    with raises_code("person_has_password"):
        svc.access.create_user(beta.admin, beta.tenant_id, "dev@acme.test", "other-password-1")
    view, generated = svc.access.create_user(beta.admin, beta.tenant_id, "DEV@acme.test")
    assert generated is None and view.tenant_id == beta.tenant_id and view.email == "dev@acme.test"
    assert view.person_id == world.dev.user_id  # (the same person: person id = the first membership's id here)
    with svc.db.read() as s:
        assert s.scalar(select(func.count(User.id)).where(User.email == "dev@acme.test")) == 2
        assert s.scalar(select(func.count(Person.id)).where(Person.email == "dev@acme.test")) == 1
    assert svc.access.authenticate("dev@acme.test", "dev-password-1", world.tenant_id).id == world.dev.user_id
    assert svc.access.authenticate("dev@acme.test", "dev-password-1", "Beta").id == view.id


def test_unknown_role_is_refused(world: World) -> None:
    with raises_code("validation_error") as info:
        world.services.access.create_user(world.admin, world.tenant_id, "x@acme.test", "x-password-123", ["Nope"])
    assert "Nope" in info.value.message
    assert world.services.access.user_by_email("x@acme.test") is None


def test_authenticate(world: World) -> None:
    svc = world.services
    assert svc.access.authenticate("dev@acme.test", "dev-password-1").id == world.dev.user_id
    assert svc.access.authenticate(" DEV@Acme.Test ", "dev-password-1").id == world.dev.user_id
    for email, password in [
        ("dev@acme.test", "wrong-password"),
        ("dev@acme.test", ""),
        ("nobody@acme.test", "dev-password-1"),
        ("dev@acme.test", "DEV-PASSWORD-1"),
        ("dev@acme.test", "x" * 2000),
    ]:
        with raises_code("invalid_credentials") as info:
            svc.access.authenticate(email, password)
        assert info.value.status == 401
    svc.access.deactivate_user(world.admin, world.dev.user_id)
    # The right password of a deactivated account says only "wrong" too (issue 13, finding 11).
    with raises_code("invalid_credentials"):
        svc.access.authenticate("dev@acme.test", "dev-password-1")
    with raises_code("invalid_credentials"):
        svc.access.authenticate("dev@acme.test", "wrong-password")


def test_deactivated_user_holds_no_permissions(world: World) -> None:
    world.services.access.deactivate_user(world.admin, world.dev.user_id)
    assert world.actor("dev@acme.test").permissions == frozenset()
    assert world.services.access.get_user(world.admin, world.dev.user_id).active is False


def test_users_read_without_users_manage_cannot_create_users(world: World) -> None:
    svc = world.services
    assert "users.read" in world.dev.permissions and "users.manage" not in world.dev.permissions
    assert len(svc.access.list_users(world.dev, world.tenant_id)) == 2
    with raises_code("forbidden") as info:
        svc.access.create_user(world.dev, world.tenant_id, "sneaky@acme.test", "sneaky-password-1")
    assert info.value.status == 403
    assert "users.manage" in info.value.message
    assert svc.access.user_by_email("sneaky@acme.test") is None
    with raises_code("forbidden"):
        svc.access.deactivate_user(world.dev, _user_id(world, "admin@acme.test"))
    with raises_code("forbidden"):
        svc.access.set_user_roles(world.dev, world.dev.user_id, ["Admin"])
    with raises_code("forbidden"):
        svc.access.create_role(world.dev, world.tenant_id, "Mine", ["users.manage"])
    with raises_code("forbidden"):
        svc.access.update_role(world.dev, world.dev_role_id, ["users.manage", "developer.manage_tokens"])
    assert world.actor("dev@acme.test").permissions == world.dev.permissions


def test_member_cannot_read_users_or_roles(world: World) -> None:
    svc = world.services
    svc.access.create_user(world.admin, world.tenant_id, "m@acme.test", "member-password-1")
    member = world.actor("m@acme.test")
    with raises_code("forbidden"):
        svc.access.list_users(member, world.tenant_id)
    with raises_code("forbidden"):
        svc.access.list_roles(member, world.tenant_id)
    with raises_code("forbidden"):
        svc.access.get_user(member, world.dev.user_id)


def test_users_manage_alone_cannot_grant_admin(world: World) -> None:
    svc = world.services
    hr = svc.access.create_role(world.admin, world.tenant_id, "HR", ["users.read", "users.manage"])
    svc.access.create_user(world.admin, world.tenant_id, "hr@acme.test", "hr-password-123", [hr.id])
    hr_actor = world.actor("hr@acme.test")
    with raises_code("permission_not_held") as info:
        svc.access.create_user(hr_actor, world.tenant_id, "boss@acme.test", "boss-password-1", ["Admin"])
    assert info.value.status == 403 and "Admin role" in info.value.message
    assert svc.access.user_by_email("boss@acme.test") is None
    with raises_code("permission_not_held"):
        svc.access.set_user_roles(hr_actor, world.dev.user_id, ["Admin"])
    # Developers grants developer.manage_tokens and roles.read, which HR doesn't hold: dev is out of HR's reach.
    with raises_code("permission_not_held"):
        svc.access.set_user_roles(hr_actor, world.dev.user_id, ["Member"])
    assert svc.access.get_user(world.admin, world.dev.user_id).roles == ["Developers"]
    # Roles within what HR holds are HR's to give.
    member, _ = svc.access.create_user(hr_actor, world.tenant_id, "temp@acme.test", "temp-password-1", ["Member"])
    assert svc.access.set_user_roles(hr_actor, member.id, ["Member", hr.id]).roles == ["HR", "Member"]


# ---- the last admin ---------------------------------------------------------------------------
def test_the_only_admin_cannot_be_deactivated(world: World) -> None:
    svc = world.services
    admin_id = _user_id(world, "admin@acme.test")
    for actor in (world.admin, OPERATOR):
        with raises_code("last_admin") as info:
            svc.access.deactivate_user(actor, admin_id)
        assert info.value.status == 409
    view = svc.access.get_user(world.admin, admin_id)
    assert view.active and view.roles == ["Admin"]
    assert svc.access.authenticate("admin@acme.test", "admin-password-1").id == admin_id


def test_the_only_admin_cannot_lose_the_admin_role(world: World) -> None:
    svc = world.services
    admin_id = _user_id(world, "admin@acme.test")
    for roles in (["Member"], [], [world.dev_role_id]):
        with raises_code("last_admin"):
            svc.access.set_user_roles(world.admin, admin_id, roles)
    with raises_code("last_admin"):
        svc.access.set_user_roles(OPERATOR, admin_id, ["Member"])
    assert svc.access.get_user(world.admin, admin_id).roles == ["Admin"]
    assert "users.manage" in world.actor("admin@acme.test").permissions


def test_with_a_second_admin_the_first_can_go(world: World) -> None:
    svc = world.services
    admin_id = _user_id(world, "admin@acme.test")
    second, _ = svc.access.create_user(world.admin, world.tenant_id, "admin2@acme.test", "admin2-password", ["Admin"])
    assert svc.access.set_user_roles(world.admin, admin_id, ["Member"]).roles == ["Member"]
    # Now admin2 is the only admin again.
    second_actor = world.actor("admin2@acme.test")
    with raises_code("last_admin"):
        svc.access.deactivate_user(second_actor, second.id)
    svc.access.set_user_roles(second_actor, admin_id, ["Admin"])
    assert svc.access.deactivate_user(second_actor, admin_id).active is False
    assert svc.access.get_user(second_actor, second.id).active


def test_a_tenant_without_an_admin_still_loses_and_changes_members(world: World) -> None:
    """A tenant run by the product's SSO or SCIM may have no admin yet: the last-admin rule protects an admin,
    it never freezes everyone else (`kbai user deactivate` in such a tenant was refused with last_admin)."""
    svc = world.services
    tenant, admin, _ = svc.access.create_tenant(OPERATOR, "Initech", external_id="org_42")
    assert admin is None
    member, _ = svc.access.create_user(OPERATOR, tenant.id, "ann@initech.test", None, ["Member"])
    assert svc.access.set_user_roles(OPERATOR, member.id, []).roles == []
    assert svc.access.deactivate_user(OPERATOR, member.id).active is False
    assert svc.access.reactivate_user(OPERATOR, member.id).active is True
    # Once someone is its admin, the rule holds for them.
    svc.access.set_user_roles(OPERATOR, member.id, ["Admin"])
    with raises_code("last_admin"):
        svc.access.deactivate_user(OPERATOR, member.id)
    with raises_code("last_admin"):
        svc.access.set_user_roles(OPERATOR, member.id, ["Member"])


def test_a_deactivated_admin_does_not_count(world: World) -> None:
    svc = world.services
    admin_id = _user_id(world, "admin@acme.test")
    second, _ = svc.access.create_user(world.admin, world.tenant_id, "admin2@acme.test", "admin2-password", ["Admin"])
    svc.access.deactivate_user(world.admin, second.id)
    with raises_code("last_admin"):
        svc.access.set_user_roles(world.admin, admin_id, ["Member"])
    with raises_code("last_admin"):
        svc.access.deactivate_user(world.admin, admin_id)


def test_deactivate_is_idempotent(world: World) -> None:
    svc = world.services
    first = svc.access.deactivate_user(world.admin, world.dev.user_id)
    again = svc.access.deactivate_user(world.admin, world.dev.user_id)
    assert first.active is False and again.active is False


# ---- roles ------------------------------------------------------------------------------------
def test_create_and_update_role(world: World) -> None:
    svc = world.services
    role = svc.access.create_role(world.admin, world.tenant_id, "  Auditors ", ["audit.read", "users.read"])
    assert role.name == "Auditors" and not role.builtin
    assert role.permissions == ["users.read", "audit.read"]  # catalog order
    updated = svc.access.update_role(world.admin, role.id, ["roles.read"], name="Reviewers")
    assert updated.name == "Reviewers" and updated.permissions == ["roles.read"]
    assert svc.access.get_role(world.admin, role.id) == updated
    with raises_code("already_exists"):
        svc.access.create_role(world.admin, world.tenant_id, "Developers", [])
    with raises_code("already_exists"):
        svc.access.update_role(world.admin, role.id, name="Developers")
    with raises_code("unknown_permission"):
        svc.access.update_role(world.admin, role.id, ["roles.read", "nope.nope"])
    assert svc.access.get_role(world.admin, role.id) == updated


def test_admin_role_cannot_be_changed(world: World) -> None:
    svc = world.services
    admin_role = _role(world, "Admin")
    for kwargs in (
        {"permissions": ["users.read"]},
        {"permissions": []},
        {"name": "Owners"},
        {"permissions": sorted(BUILTIN_KEYS), "name": "Owners"},
    ):
        with raises_code("builtin_role") as info:
            svc.access.update_role(world.admin, admin_role.id, **kwargs)
        assert info.value.status == 422
    with raises_code("builtin_role"):
        svc.access.update_role(OPERATOR, admin_role.id, ["users.read"])
    after = svc.access.get_role(world.admin, admin_role.id)
    assert after.name == "Admin" and set(after.permissions) == BUILTIN_KEYS
    assert world.actor("admin@acme.test").permissions == frozenset(BUILTIN_KEYS)


def test_member_role_cannot_be_renamed(world: World) -> None:
    svc = world.services
    member = _role(world, "Member")
    with raises_code("builtin_role"):
        svc.access.update_role(world.admin, member.id, name="Staff")
    assert svc.access.get_role(world.admin, member.id).name == "Member"


# ---- tenants are isolated ---------------------------------------------------------------------
def test_admin_of_another_tenant_gets_not_found(world: World) -> None:
    svc = world.services
    beta = build_world(svc, "Beta", "beta.test")
    a_admin_id = _user_id(world, "admin@acme.test")
    for user_id in (world.dev.user_id, a_admin_id):
        with raises_code("not_found"):
            svc.access.get_user(beta.admin, user_id)
        with raises_code("not_found"):
            svc.access.set_user_roles(beta.admin, user_id, ["Member"])
        with raises_code("not_found"):
            svc.access.deactivate_user(beta.admin, user_id)
        with raises_code("not_found"):
            svc.access.set_password(beta.admin, user_id, "hijacked-password")
    for role in (world.dev_role_id, _role(world, "Admin").id, _role(world, "Member").id):
        with raises_code("not_found"):
            svc.access.get_role(beta.admin, role)
        with raises_code("not_found"):
            svc.access.update_role(beta.admin, role, ["users.read"])
    # Listing another tenant is refused, and a foreign role id can't be granted.
    with raises_code("forbidden"):
        svc.access.list_users(beta.admin, world.tenant_id)
    with raises_code("forbidden"):
        svc.access.list_roles(beta.admin, world.tenant_id)
    with raises_code("forbidden"):
        svc.access.create_user(beta.admin, world.tenant_id, "spy@beta.test", "spy-password-1")
    with raises_code("validation_error"):
        svc.access.set_user_roles(beta.admin, beta.dev.user_id, [world.dev_role_id])
    # Nothing in Acme changed.
    assert svc.access.get_user(world.admin, world.dev.user_id).roles == ["Developers"]
    assert svc.access.get_user(world.admin, world.dev.user_id).active
    assert svc.access.authenticate("dev@acme.test", "dev-password-1").id == world.dev.user_id
    assert svc.access.get_role(world.admin, world.dev_role_id).permissions == [
        "developer.manage_tokens",
        "users.read",
        "roles.read",
    ]
    assert [u.email for u in svc.access.list_users(world.admin, world.tenant_id)] == [
        "admin@acme.test",
        "dev@acme.test",
    ]


def test_roles_belong_to_their_tenant(world: World) -> None:
    beta = build_world(world.services, "Beta", "beta.test")
    with world.services.db.read() as s:
        acme_roles = set(s.scalars(select(Role.name).where(Role.tenant_id == world.tenant_id)))
        beta_roles = set(s.scalars(select(Role.name).where(Role.tenant_id == beta.tenant_id)))
    assert acme_roles == beta_roles == {"Admin", "Member", "Developers"}


# ---- limits -----------------------------------------------------------------------------------
def test_only_the_operator_sets_limits(world: World) -> None:
    with raises_code("forbidden"):
        world.services.access.set_limit(world.admin, 50, user_email="dev@acme.test")
    assert world.services.tokens.allowance(world.dev.user_id) == (0, 10)


def test_set_limit_validates(world: World) -> None:
    svc = world.services
    for value in (0, -1, 100_001):
        with raises_code("validation_error"):
            svc.access.set_limit(OPERATOR, value, user_email="dev@acme.test")
    with raises_code("validation_error"):
        svc.access.set_limit(OPERATOR, 5)
    with raises_code("validation_error"):
        svc.access.set_limit(OPERATOR, 5, user_email="dev@acme.test", tenant_name="Acme")
    with raises_code("not_found"):
        svc.access.set_limit(OPERATOR, 5, user_email="nobody@acme.test")
    with raises_code("not_found"):
        svc.access.set_limit(OPERATOR, 5, tenant_name="Nope")
    assert svc.tokens.allowance(world.dev.user_id) == (0, 10)
