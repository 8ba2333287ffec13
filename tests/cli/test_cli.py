"""The real ``kbai`` console script, run as a subprocess against a test database on both backends.

User mistakes must give exit code 1, one line starting with ``error:`` on stderr and no traceback.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select

from kbai import cli
from kbai.access.catalog import Catalog
from kbai.clock import FrozenClock
from kbai.config import Settings
from kbai.services import Services
from kbai.store.audit import Actor
from kbai.store.models import Tenant, User
from kbai.tokens.verify import Outcome
from tests.conftest import FAST_ARGON2, PG_ADMIN_URL, _pg_admin, _pg_url, missing_service
from tests.tokens.helpers import assert_no_secret, raises_code

KBAI = str(Path(sys.executable).with_name("kbai"))
PASSWORD_LINE = re.compile(r"^password for (\S+): (\S+)\s+\(shown once; store it now\)$")


@pytest.fixture
def empty_database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database with no tables at all, so `kbai db upgrade` has real work to do."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'cli.db'}"
        return
    if request.getfixturevalue("pg_template") is None:
        missing_service(f"PostgreSQL at {PG_ADMIN_URL}")
    name = f"kbai_cli_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KBAI_")}
    env.update(
        KBAI_DATABASE_URL=database_url,
        KBAI_ARGON2_MEMORY_KIB="64",
        KBAI_ARGON2_TIME_COST="1",
        KBAI_ARGON2_PARALLELISM="1",
        NO_COLOR="1",
    )
    env.update(extra)
    return env


class Kbai:
    def __init__(self, database_url: str, cwd: Path) -> None:
        self.database_url = database_url
        self.cwd = cwd

    def popen(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [KBAI, *args],
            cwd=self.cwd,
            env=_env(self.database_url, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        proc = self.popen(*args, **env)
        out, err = proc.communicate(timeout=120)
        return subprocess.CompletedProcess([KBAI, *args], proc.returncode, out, err)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args[1:]} failed: {result.stderr.strip()}"
    assert "Traceback" not in result.stdout + result.stderr
    return result.stdout


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == 1, (result.args[1:], result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, (result.args[1:], lines)
    assert lines[0].startswith("error:"), lines
    assert len(lines[0]) > len("error: ") + 10
    return lines[0]


def _run_all(kbai: Kbai, cases: dict[str, tuple[tuple[str, ...], dict[str, str]]]) -> dict[str, str]:
    """Run independent commands side by side; each must fail with one ``error:`` line. Returns the lines."""
    running = {case: kbai.popen(*args, **env) for case, (args, env) in cases.items()}
    lines = {}
    for case, proc in running.items():
        out, err = proc.communicate(timeout=120)
        lines[case] = _one_error_line(subprocess.CompletedProcess(cases[case][0], proc.returncode, out, err))
    return lines


def _services(database_url: str) -> Services:
    # The real clock: the CLI stamps revocations with it, so this side must agree on "now".
    return Services.build(Settings(database_url=database_url, **FAST_ARGON2))


def _password(stdout: str, email: str) -> str:
    found = [m.group(2) for line in stdout.splitlines() if (m := PASSWORD_LINE.match(line)) and m.group(1) == email]
    assert len(found) == 1, stdout
    assert stdout.count(found[0]) == 1  # printed once
    return found[0]


def test_cli_flow(empty_database_url: str, tmp_path: Path) -> None:
    kbai = Kbai(empty_database_url, tmp_path)

    out = _ok(kbai("db", "upgrade"))
    assert "database is up to date" in out
    svc = _services(empty_database_url)
    try:
        tables = set(inspect(svc.db.engine).get_table_names())
        assert {"tenants", "users", "roles", "tokens", "audit_events"} <= tables
        _ok(kbai("db", "upgrade"))  # idempotent

        out = _ok(kbai("tenant", "create", "Acme", "--admin-email", "a@acme.test"))
        assert "created tenant Acme" in out
        admin_password = _password(out, "a@acme.test")
        admin = svc.access.authenticate("a@acme.test", admin_password)
        tenant = svc.access.tenant_by_name("Acme")
        assert tenant is not None and admin.tenant_id == tenant.id
        assert [r.name for r in svc.access.list_roles(cli.OPERATOR, tenant.id)] == ["Admin", "Member"]
        assert svc.access.get_user(cli.OPERATOR, admin.id).roles == ["Admin"]

        out = _ok(kbai("user", "create", "--tenant", "Acme", "--email", "x@acme.test", "--role", "Member"))
        x_password = _password(out, "x@acme.test")
        x = svc.access.authenticate("x@acme.test", x_password)
        assert svc.access.get_user(cli.OPERATOR, x.id).roles == ["Member"]

        out = _ok(kbai("limits", "set", "--user", "x@acme.test", "--max-active-tokens", "20"))
        assert "20" in out
        assert svc.tokens.allowance(x.id) == (0, 20)
        # It takes effect: x may now hold 20 active tokens, and not 21.
        role = svc.access.create_role(cli.OPERATOR, tenant.id, "Devs", ["developer.manage_tokens"])
        svc.access.set_user_roles(cli.OPERATOR, x.id, [role.id])
        from tests.conftest import World

        x_actor = World(svc, tenant.id, None, None, role.id).actor("x@acme.test")  # type: ignore[arg-type]
        views = [svc.tokens.create(x_actor, f"x-{i}", [])[0] for i in range(20)]
        with raises_code("token_limit_reached") as info:
            svc.tokens.create(x_actor, "x-20", [])
        assert "limit is 20" in info.value.message
        # The tenant's other users keep the default.
        assert svc.tokens.allowance(admin.id) == (0, 10)

        target = views[0]
        svc.tokens.revoke(x_actor, views[1].id)
        _, plaintext = svc.tokens.create(x_actor, "to be revoked by support", [])
        to_revoke = svc.tokens.list(x.id)[0]
        assert svc.tokens.verify(plaintext).ok

        out = _ok(kbai("tokens", "list"))
        assert_no_secret(plaintext[8:], out, "tokens list output")
        rows = {int(line.split()[0]): line for line in out.splitlines()[1:]}
        assert set(rows) == {v.id for v in views} | {to_revoke.id}
        assert "x@acme.test" in rows[target.id] and "x-0" in rows[target.id] and target.prefix in rows[target.id]
        assert rows[to_revoke.id].split()[-3:] == ["active", "Never", "Never"]
        assert " revoked " in rows[views[1].id]
        assert " active " in rows[target.id]

        out = _ok(kbai("tokens", "revoke", str(to_revoke.id)))
        assert f"token {to_revoke.id}" in out and "revoked" in out
        assert to_revoke.prefix in out
        assert_no_secret(plaintext[8:], out, "tokens revoke output")
        assert svc.tokens.verify(plaintext).outcome is Outcome.REVOKED
        assert svc.tokens.get(x_actor, to_revoke.id).status == "revoked"
        revoked_at = svc.tokens.get(x_actor, to_revoke.id).revoked_at
        out = _ok(kbai("tokens", "revoke", str(to_revoke.id)))  # idempotent
        assert "revoked" in out
        assert svc.tokens.get(x_actor, to_revoke.id).revoked_at == revoked_at
    finally:
        svc.close()


def test_cli_mistakes_give_one_error_line(database_url: str, tmp_path: Path) -> None:
    kbai = Kbai(database_url, tmp_path)
    svc = _services(database_url)
    try:
        _ok(kbai("tenant", "create", "Acme", "--admin-email", "a@acme.test", "--admin-password", "admin-password-1"))
        _ok(kbai("user", "create", "--tenant", "Acme", "--email", "x@acme.test", "--password", "x-password-123"))
        mistakes = {
            "unknown tenant": ("user", "create", "--tenant", "Nope", "--email", "y@acme.test"),
            "unknown role": ("user", "create", "--tenant", "Acme", "--email", "y@acme.test", "--role", "Nope"),
            "duplicate tenant": ("tenant", "create", "Acme", "--admin-email", "b@acme.test"),
            "limit 0": ("limits", "set", "--user", "x@acme.test", "--max-active-tokens", "0"),
            "revoke unknown token": ("tokens", "revoke", "999999"),
        }
        # Independent commands: run them side by side to keep the test fast.
        lines = _run_all(kbai, {case: (args, {}) for case, args in mistakes.items()})

        assert "Nope" in lines["unknown tenant"]
        assert "Nope" in lines["unknown role"]
        assert "already exists" in lines["duplicate tenant"]
        assert "between 1 and" in lines["limit 0"]
        assert "999999" in lines["revoke unknown token"] or "not found" in lines["revoke unknown token"]

        # Nothing changed.
        with svc.db.read() as s:
            assert s.scalar(select(func.count(Tenant.id))) == 1
            assert sorted(s.scalars(select(User.email).select_from(User))) == ["a@acme.test", "x@acme.test"]
        x = svc.access.user_by_email("x@acme.test")
        assert x is not None and x.max_active_tokens is None
        assert svc.access.tenant_by_name("Acme").max_active_tokens is None  # type: ignore[union-attr]
        assert svc.access.tenant_by_name("Foo") is None
    finally:
        svc.close()


def test_finding5_user_reactivate_brings_back_the_login_and_never_a_revoked_token(
    database_url: str, tmp_path: Path
) -> None:
    """`kbai user reactivate --email E` mirrors `kbai user deactivate`: the operator's way back (issue 13)."""
    from kbai.store import audit
    from tests.conftest import World

    kbai = Kbai(database_url, tmp_path)
    svc = _services(database_url)
    try:
        _ok(kbai("tenant", "create", "Acme", "--admin-email", "a@acme.test", "--admin-password", "admin-password-1"))
        tenant = svc.access.tenant_by_name("Acme")
        assert tenant is not None
        role = svc.access.create_role(cli.OPERATOR, tenant.id, "Devs", ["developer.manage_tokens"])
        _ok(
            kbai(
                "user",
                "create",
                "--tenant",
                "Acme",
                "--email",
                "x@acme.test",
                "--password",
                "x-password-123",
                "--role",
                "Devs",
            )
        )
        x_actor = World(svc, tenant.id, None, None, role.id).actor("x@acme.test")  # type: ignore[arg-type]
        _, kept = svc.tokens.create(x_actor, "kept", [])
        gone_view, gone = svc.tokens.create(x_actor, "gone", [])
        svc.tokens.revoke(x_actor, gone_view.id)

        out = _ok(kbai("user", "deactivate", "--email", "x@acme.test"))
        assert "deactivated x@acme.test" in out
        svc.cache.clear()  # this process caches verdicts; the CLI runs in another
        assert svc.tokens.verify(kept).outcome is Outcome.OWNER_INACTIVE
        out = _ok(kbai("user", "reactivate", "--email", "X@acme.test"))
        assert out.strip() == (
            "reactivated x@acme.test; they can log in again, and their tokens that were not "
            "revoked or expired work again"
        )
        svc.cache.clear()
        assert svc.tokens.verify(kept).ok
        assert svc.tokens.verify(gone).outcome is Outcome.REVOKED
        assert svc.access.authenticate("x@acme.test", "x-password-123").active
        _ok(kbai("user", "reactivate", "--email", "x@acme.test"))  # idempotent
        with svc.db.read() as s:
            events = [e for e in audit.events(s, tenant.id, limit=50) if e.action == "user.reactivate"]
        assert [(e.actor, e.details) for e in events] == [("operator", {"email": "x@acme.test"})]
        line = _one_error_line(kbai("user", "reactivate", "--email", "nobody@acme.test"))
        assert "nobody@acme.test" in line and "not found" in line
    finally:
        svc.close()


def test_settings_and_connection_mistakes_give_one_error_line(tmp_path: Path) -> None:
    # These fail before any backend is reached, so they run once rather than per backend.
    kbai = Kbai(f"sqlite:///{tmp_path / 'unused.db'}", tmp_path)
    unreachable = "postgresql://x:hunter2-secret@127.0.0.1:1/x"
    lines = _run_all(
        kbai,
        {
            "unreachable database": (("db", "upgrade"), {"KBAI_DATABASE_URL": unreachable}),
            "unreachable database, other command": (
                ("tenant", "create", "Foo", "--admin-email", "f@foo.test"),
                {"KBAI_DATABASE_URL": unreachable},
            ),
            "bad default limit": (
                ("tenant", "create", "Foo", "--admin-email", "f@foo.test"),
                {"KBAI_DEFAULT_MAX_ACTIVE_TOKENS": "abc"},
            ),
            "bad database scheme": (("db", "upgrade"), {"KBAI_DATABASE_URL": "mysql://x@127.0.0.1/x"}),
        },
    )
    for case in ("unreachable database", "unreachable database, other command"):
        assert "127.0.0.1:1" in lines[case] and "KBAI_DATABASE_URL" in lines[case]
        assert "hunter2-secret" not in lines[case]
    assert "KBAI_DEFAULT_MAX_ACTIVE_TOKENS" in lines["bad default limit"]
    assert "KBAI_DATABASE_URL" in lines["bad database scheme"]
    assert not (tmp_path / "unused.db").exists()


def test_demo_is_idempotent_and_its_passwords_log_in(services: Services, capsys: pytest.CaptureFixture[str]) -> None:
    def run_demo() -> dict[str, str]:
        cli._demo(services)
        out = capsys.readouterr().out
        found = dict(re.findall(r"demo login: (\S+)\s+password: (\S+)", out))
        assert set(found) == {"admin@acme.test", "dev@acme.test"}, out
        return found

    first = run_demo()
    for email, password in first.items():
        assert services.access.authenticate(email, password).email == email
    second = run_demo()
    for email, password in second.items():
        assert services.access.authenticate(email, password).email == email

    with services.db.read() as s:
        assert s.scalar(select(func.count(Tenant.id)).where(Tenant.name == "Acme")) == 1
        assert s.scalar(select(func.count(Tenant.id))) == 1
        assert s.scalar(select(func.count(User.id)).where(User.email == "admin@acme.test")) == 1
        assert s.scalar(select(func.count(User.id)).where(User.email == "dev@acme.test")) == 1
        assert s.scalar(select(func.count(User.id))) == 2
    admin = services.access.user_by_email("admin@acme.test")
    dev = services.access.user_by_email("dev@acme.test")
    assert admin is not None and dev is not None
    assert services.access.get_user(cli.OPERATOR, admin.id).roles == ["Admin"]
    assert services.access.get_user(cli.OPERATOR, dev.id).roles == ["Member"]
    assert admin.tenant_id == dev.tenant_id


def test_demo_gives_member_the_demo_products_permissions(
    database_url: str, clock: FrozenClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kbai serve --demo` loads the packaged product catalog; Member holds it, so after the help page's grant
    (Manage API Tokens on the member's role) the create form offers real scopes."""
    settings = Settings(database_url=database_url, permissions_file=cli.DEMO_PERMISSIONS, **FAST_ARGON2)
    svc = Services.build(settings, clock=clock)
    try:
        for _ in range(2):  # idempotent
            cli._demo(svc)
        capsys.readouterr()
        dev = svc.access.user_by_email("dev@acme.test")
        assert dev is not None
        with svc.db.read() as s:
            held = svc.access.permissions(s, dev)
        assert {"contacts.read", "contacts.write", "deals.read", "deals.write", "reports.export"} <= held
        assert svc.catalog.token_usable(held) == held, "none of the demo product's permissions needs a session"
        member = next(r for r in svc.access.list_roles(cli.OPERATOR, dev.tenant_id) if r.name == "Member")
        svc.access.update_role(cli.OPERATOR, member.id, [*member.permissions, "developer.manage_tokens"])
        view, _ = svc.tokens.create(
            Actor(kind="user", user_id=dev.id, tenant_id=dev.tenant_id, email=dev.email),
            "Zapier production",
            ["contacts.read"],
            expires_in_days=90,
        )
        assert view.scopes == ["contacts.read"]
    finally:
        svc.close()


def test_the_demo_catalog_is_packaged_beside_the_cli() -> None:
    text = (Path(cli.__file__).parent / "demo_permissions.toml").read_text(encoding="utf-8")
    assert cli.DEMO_PERMISSIONS.is_file() and "contacts.read" in text
    assert Catalog.load(cli.DEMO_PERMISSIONS).get("contacts.read") is not None


def test_service_credential_create_list_and_revoke(database_url: str, tmp_path: Path) -> None:
    import json

    kbai = Kbai(database_url, tmp_path)
    svc = _services(database_url)
    try:
        created = kbai("service-credential", "create", "contacts-api")
        out = _ok(created)
        lines = dict(line.split(": ", 1) for line in out.splitlines())
        assert set(lines) == {"client_id", "client_secret"}, out
        client_id, secret = lines["client_id"], lines["client_secret"]
        assert "shown once" in created.stderr and secret not in created.stderr
        assert svc.credentials.authenticate(client_id, secret) is not None
        made = json.loads(_ok(kbai("service-credential", "create", "billing-api", "--json")))
        assert set(made) == {"id", "name", "client_id", "client_secret"} and made["name"] == "billing-api"

        listed = _ok(kbai("service-credential", "list"))
        assert client_id in listed and "contacts-api" in listed and secret not in listed
        rows = json.loads(_ok(kbai("service-credential", "list", "--json")))["service_credentials"]
        assert [(r["client_id"], r["status"]) for r in rows] == [(client_id, "active"), (made["client_id"], "active")]
        assert secret not in json.dumps(rows) and made["client_secret"] not in json.dumps(rows)

        out = _ok(kbai("service-credential", "revoke", client_id))
        assert f"service credential {client_id} (contacts-api) is revoked" in out
        assert svc.credentials.authenticate(client_id, secret) is None, "introspection refuses it at once"
        assert svc.credentials.authenticate(made["client_id"], made["client_secret"]) is not None
        again = json.loads(_ok(kbai("service-credential", "revoke", client_id, "--json")))
        assert again["status"] == "revoked" and again["revoked_at"] == next(
            r["revoked_at"]
            for r in json.loads(_ok(kbai("service-credential", "list", "--json")))["service_credentials"]
            if r["client_id"] == client_id
        )
        assert "not found" in _one_error_line(kbai("service-credential", "revoke", "kbai_sc_0000000000000000"))
    finally:
        svc.close()


def test_scim_token_create_list_and_revoke(database_url: str, tmp_path: Path) -> None:
    """`kbai scim-token create --tenant NAME` prints the secret alone on its last line (SPEC); --json for
    scripts; list never shows a secret; revoke stops it at once."""
    import json

    kbai = Kbai(database_url, tmp_path)
    svc = _services(database_url)
    try:
        tenant, _, _ = svc.access.create_tenant(Actor.operator(), "Acme", "admin@acme.test", "admin-password-1")
        created = kbai("scim-token", "create", "--tenant", "Acme")
        secret = _ok(created).strip().splitlines()[-1]
        assert re.fullmatch(r"kbai_scim_[0-9a-f]{64}", secret), created.stdout
        assert "shown once" in created.stderr and secret not in created.stderr
        found = svc.provisioning.authenticate(secret)
        assert found is not None and found.tenant_id == tenant.id and found.name == "SCIM"
        made = json.loads(_ok(kbai("scim-token", "create", "--tenant", "Acme", "--name", "Entra ID", "--json")))
        assert made["name"] == "Entra ID" and made["token"].startswith("kbai_scim_") and made["scim_path"] == "/scim/v2"

        listed = _ok(kbai("scim-token", "list", "--tenant", "Acme"))
        assert "Entra ID" in listed and secret not in listed and made["token"] not in listed
        rows = json.loads(_ok(kbai("scim-token", "list", "--tenant", "Acme", "--json")))["scim_credentials"]
        assert {r["name"] for r in rows} == {"SCIM", "Entra ID"} and "token" not in json.dumps(rows)

        out = _ok(kbai("scim-token", "revoke", str(found.id), "--tenant", "Acme"))
        assert out.strip() == f"provisioning credential {found.id} (SCIM) is revoked"
        assert svc.provisioning.authenticate(secret) is None
        assert svc.provisioning.authenticate(made["token"]) is not None
        missing = kbai("scim-token", "create", "--tenant", "Nope")
        assert missing.returncode == 1 and "Tenant 'Nope' not found" in missing.stderr
    finally:
        svc.close()
