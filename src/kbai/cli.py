"""The ``kbai`` command (Typer). Every failure is one ``error:`` line on stderr, never a traceback:
exit 1 for a mistake the user can fix, 2 for a usage error (unknown option, missing argument), 70
(EX_SOFTWARE) for a bug; ``kbai scan`` exits 3 when it finds an active token, and 130 is Ctrl-C."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import click
import typer
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from kbai import __version__
from kbai.access.catalog import BUILTIN, CatalogError
from kbai.clock import iso
from kbai.config import MAX_WORKERS, Settings
from kbai.errors import KbaiError
from kbai.services import Services
from kbai.store.audit import Actor

app = typer.Typer(
    help="kbai: Developer API tokens for your product. Run `kbai serve --demo` to try it.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
)
EXIT_USAGE = 2
EXIT_BUG = 70  # EX_SOFTWARE (sysexits.h)
tenant_app = typer.Typer(help="Create tenants.", no_args_is_help=True)
user_app = typer.Typer(help="Create and manage users.", no_args_is_help=True)
limits_app = typer.Typer(help="Raise or reset active-token limits.", no_args_is_help=True)
tokens_app = typer.Typer(help="Support: list and revoke tokens.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
credential_app = typer.Typer(help="Service credentials for /api/v1/introspect.", no_args_is_help=True)
scim_app = typer.Typer(
    help="SCIM provisioning credentials of a tenant (for its identity provider).", no_args_is_help=True
)
policy_app = typer.Typer(
    help="Tenant token policies: lifetime, expiration, auto-revoke, webhook.", no_args_is_help=True
)
app.add_typer(tenant_app, name="tenant")
app.add_typer(user_app, name="user")
app.add_typer(limits_app, name="limits")
app.add_typer(tokens_app, name="tokens")
app.add_typer(db_app, name="db")
app.add_typer(credential_app, name="service-credential")
app.add_typer(policy_app, name="policy")
app.add_typer(scim_app, name="scim-token")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"kbai {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", help="Print kbai's version and exit.", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    """kbai: Developer API tokens for your product. Run `kbai serve --demo` to try it."""


F = TypeVar("F", bound=Callable[..., Any])
OPERATOR = Actor.operator()
DEMO_PERMISSIONS = Path(__file__).parent / "demo_permissions.toml"
BUILTIN_KEYS = frozenset(p.key for p in BUILTIN)


def fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def warn(message: str) -> None:
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


def read_password(given: str | None, from_stdin: bool, prompt: bool, flag: str) -> str | None:
    """The password from exactly one of ``--FLAG P`` (warned: argv shows in `ps` and shell history),
    ``--FLAG-stdin`` (the first line of standard input) or ``--FLAG-prompt`` (hidden, typed twice);
    None when none is given (kbai then generates one and prints it once)."""
    if sum((given is not None, from_stdin, prompt)) > 1:
        raise fail(f"give only one of --{flag}, --{flag}-stdin and --{flag}-prompt")
    if given is not None:
        warn(
            f"--{flag} on the command line is visible to other users (ps) and kept in shell history; "
            f"use --{flag}-stdin or --{flag}-prompt"
        )
        return given
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise fail(f"--{flag}-stdin: standard input has no password on its first line")
        return line
    if prompt:
        return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True))
    return None


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for a message
        return "the configured database"


def friendly(func: F) -> F:
    """Turn the errors a user can cause or fix into one clear line and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KbaiError as exc:
            raise fail(exc.message) from None
        except CatalogError as exc:
            raise fail(str(exc)) from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())).upper()
            msg = str(first.get("msg", "")).removeprefix("Value error, ")
            raise fail(f"setting KBAI_{where}: {msg}" if where else f"settings: {msg}") from None
        except OperationalError as exc:
            url = _safe_url(_settings().database_url)
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
            raise fail(f"cannot use the database at {url}: {reason}. Check KBAI_DATABASE_URL.") from None
        except SQLAlchemyError as exc:
            raise fail(f"database error: {type(exc).__name__}. Run `kbai db upgrade`, then try again.") from None

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps func's signature


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (one object) instead of text, for scripts.")]


def print_json(value: Any) -> None:
    """One JSON document on stdout; times as ISO 8601 UTC like the API."""
    typer.echo(json.dumps(value, default=lambda v: iso(v) if isinstance(v, datetime) else str(v), ensure_ascii=False))


_services: Services | None = None


def _settings() -> Settings:
    from kbai.config import get_settings

    return get_settings()


def services(*, upgrade: bool = True) -> Services:
    global _services
    if _services is None:
        _services = Services.build(_settings())
        if upgrade:
            _services.db.upgrade()
    return _services


def _tenant_id(svc: Services, name: str) -> int:
    tenant = svc.access.tenant_by_name(name)
    if tenant is None:
        raise KbaiError_not_found(f"Tenant '{name}'")
    return tenant.id


def KbaiError_not_found(what: str) -> KbaiError:  # noqa: N802 - reads as a constructor
    from kbai import errors

    return KbaiError(errors.NOT_FOUND, what=what)


# How long uvicorn's supervisor waits for a worker's answer to its ping before it takes the worker for hung.
WORKER_START_SECONDS = 120


# ---- serve / db -----------------------------------------------------------------------------
@app.command()
@friendly
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    demo: Annotated[bool, typer.Option("--demo", help="Create the Acme demo tenant and print its logins.")] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Processes serving on the one port (default KBAI_WORKERS, 1). Use about one per CPU core.",
            min=1,
            max=MAX_WORKERS,
        ),
    ] = None,
) -> None:
    """Apply migrations and serve the API and pages."""
    if demo and _settings().permissions_file is None:
        # The demo product's permissions, for this process and the app uvicorn builds from the settings.
        os.environ["KBAI_PERMISSIONS_FILE"] = str(DEMO_PERMISSIONS)
        from kbai.config import get_settings

        get_settings.cache_clear()
    svc = services()
    if demo:
        _demo(svc)
    import uvicorn

    count = workers or svc.settings.workers
    plural = f", {count} workers" if count > 1 else ""
    under = f", reached at {svc.settings.public_url}" if svc.settings.public_url else ""
    typer.echo(
        f"kbai serving on http://{host}:{port}{svc.settings.path_prefix}  "
        f"(database: {_safe_url(svc.settings.database_url)}{plural}{under})"
    )
    svc.close()
    # Each worker builds its own services (cache, invalidation listener, last-used buffer) from the
    # same settings; they agree through the database and the invalidation bus, as separate instances do.
    # X-Forwarded-For is read by the app itself (kbai.web.proxy), which also checks that it is an address.
    uvicorn.run(
        "kbai.app:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        workers=count if count > 1 else None,
        # uvicorn kills a worker that has not answered its supervisor's ping within this many seconds and
        # starts another; its default of 5 s is shorter than a new process needs to import the app on a
        # busy machine, which then restarts workers for ever and never serves.
        timeout_worker_healthcheck=WORKER_START_SECONDS,
    )


def _demo(svc: Services) -> None:
    """Idempotent: Acme, admin@acme.test (Admin) and dev@acme.test (Member); passwords are reset each run.
    Member holds the product's own permissions (the demo catalog, or KBAI_PERMISSIONS_FILE's), so once an
    admin grants Manage API Tokens, as the help page says, the create form offers real scopes."""
    tenant = svc.access.tenant_by_name("Acme")
    if tenant is None:
        tenant, _admin, _ = svc.access.create_tenant(OPERATOR, "Acme", "admin@acme.test")
    product = [p.key for p in svc.catalog.permissions if p.key not in BUILTIN_KEYS]
    if product:
        member = next(r for r in svc.access.list_roles(OPERATOR, tenant.id) if r.builtin and r.name == "Member")
        missing = [k for k in product if k not in member.permissions]
        if missing:
            svc.access.update_role(OPERATOR, member.id, [*member.permissions, *missing])
    for email, role in (("admin@acme.test", "Admin"), ("dev@acme.test", "Member")):
        user = svc.access.user_by_email(email, tenant.id)
        if user is None:
            svc.access.create_user(OPERATOR, tenant.id, email, roles=[role])
            user = svc.access.user_by_email(email, tenant.id)
        assert user is not None
        password = svc.access.set_password(OPERATOR, user.id)
        typer.echo(f"demo login: {email:<18} password: {password}   ({role})")


@db_app.command("upgrade")
@friendly
def db_upgrade() -> None:
    """Apply every pending migration."""
    svc = services(upgrade=False)
    svc.db.upgrade()
    typer.echo(f"database is up to date ({_safe_url(svc.settings.database_url)})")


# ---- tenants and users -----------------------------------------------------------------------
@tenant_app.command("create")
@friendly
def tenant_create(
    name: Annotated[str, typer.Argument(help="Tenant (company) name.")],
    admin_email: Annotated[
        str | None,
        typer.Option(
            help="Email of the tenant's first admin. May be left out with --external-id: then the first person "
            "to sign in with single sign-on becomes its admin."
        ),
    ] = None,
    admin_password: Annotated[
        str | None, typer.Option(help="Avoid: visible in `ps` and shell history (prefer the two options below).")
    ] = None,
    admin_password_stdin: Annotated[
        bool,
        typer.Option("--admin-password-stdin", help="Read the admin's password from the first line of standard input."),
    ] = False,
    admin_password_prompt: Annotated[
        bool, typer.Option("--admin-password-prompt", help="Ask for the admin's password (hidden input, typed twice).")
    ] = False,
    external_id: Annotated[
        str | None, typer.Option(help="The product's id of this organisation (what the OIDC tenant claim says).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a tenant with its Admin and Member roles and its first admin (password generated when none is given)."""
    password = read_password(admin_password, admin_password_stdin, admin_password_prompt, "admin-password")
    tenant, user, generated = services().access.create_tenant(
        OPERATOR, name, admin_email, password, external_id=external_id
    )
    if as_json:
        print_json(
            {
                "id": tenant.id,
                "name": tenant.name,
                "external_id": tenant.external_id,
                "admin": {"id": user.id, "email": user.email} if user else None,
                "password": generated,
            }
        )
        return
    ext = f", external id {tenant.external_id}" if tenant.external_id else ""
    typer.echo(
        f"created tenant {tenant.name} (id {tenant.id}{ext})"
        + (f" with admin {user.email}" if user else " with no users yet")
    )
    if generated and user:
        typer.echo(f"password for {user.email}: {generated}   (shown once; store it now)")


@user_app.command("create")
@friendly
def user_create(
    tenant: Annotated[str, typer.Option(help="Tenant name.")],
    email: Annotated[str, typer.Option(help="The user's email (their login).")],
    password: Annotated[
        str | None, typer.Option(help="Avoid: visible in `ps` and shell history (prefer the two options below).")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of standard input.")
    ] = False,
    password_prompt: Annotated[
        bool, typer.Option("--password-prompt", help="Ask for the password (hidden input, typed twice).")
    ] = False,
    role: Annotated[list[str] | None, typer.Option(help="Role name; repeat for several. Default: Member.")] = None,
    external_id: Annotated[
        str | None,
        typer.Option(
            help="The product's id of this person in this tenant (unique per tenant); a first OIDC sign-in whose "
            "external id claim equals it is linked to this user."
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a user in a tenant (password generated and printed once when none is given)."""
    chosen = read_password(password, password_stdin, password_prompt, "password")
    svc = services()
    view, generated = svc.access.create_user(
        OPERATOR, _tenant_id(svc, tenant), email, chosen, role or [], external_id=external_id
    )
    if as_json:
        print_json(
            {
                "id": view.id,
                "email": view.email,
                "tenant": tenant,
                "external_id": view.external_id,
                "roles": view.roles,
                "active": view.active,
                "password": generated,
            }
        )
        return
    ext = f", external id {view.external_id}" if view.external_id else ""
    typer.echo(f"created user {view.email} (id {view.id}{ext}) in {tenant} with roles: {', '.join(view.roles)}")
    if generated:
        typer.echo(f"password for {view.email}: {generated}   (shown once; store it now)")
    elif chosen is None:
        typer.echo(f"{view.email} already had an account (another tenant): they log in with their own password")


@user_app.command("set-password")
@friendly
def user_set_password(
    email: Annotated[str, typer.Option(help="The user's email.")],
    password: Annotated[
        str | None, typer.Option(help="Avoid: visible in `ps` and shell history (prefer the two options below).")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of standard input.")
    ] = False,
    password_prompt: Annotated[
        bool, typer.Option("--password-prompt", help="Ask for the password (hidden input, typed twice).")
    ] = False,
) -> None:
    """Set or reset a person's password (generated and printed once when none is given); every session of
    theirs, in every tenant, ends at once."""
    chosen = read_password(password, password_stdin, password_prompt, "password")
    svc = services()
    user = svc.access.user_by_email(email)
    if user is None:
        raise KbaiError_not_found(f"User '{email}'")
    generated = svc.access.set_password(OPERATOR, user.id, chosen)
    typer.echo(f"password set for {user.email}" + (f": {generated}   (shown once)" if generated else ""))
    typer.echo(f"all sessions ended for {user.email}: they log in again with the new password")


@user_app.command("deactivate")
@friendly
def user_deactivate(
    email: Annotated[str, typer.Option(help="The user's email.")],
    tenant: Annotated[str | None, typer.Option(help="The tenant, for a person in several.")] = None,
) -> None:
    """Deactivate a user: no more logins, and their tokens stop working at once."""
    svc = services()
    user = svc.access.membership_by_email(email, tenant)
    svc.access.deactivate_user(OPERATOR, user.id)
    typer.echo(f"deactivated {user.email}; their tokens no longer work")


@user_app.command("reactivate")
@friendly
def user_reactivate(
    email: Annotated[str, typer.Option(help="The user's email.")],
    tenant: Annotated[str | None, typer.Option(help="The tenant, for a person in several.")] = None,
) -> None:
    """Reactivate a user: they may log in again; tokens that were not revoked or expired work again."""
    svc = services()
    user = svc.access.membership_by_email(email, tenant)
    svc.access.reactivate_user(OPERATOR, user.id)
    typer.echo(
        f"reactivated {user.email}; they can log in again, and their tokens that were not revoked or expired work again"
    )


# ---- limits ----------------------------------------------------------------------------------
@limits_app.command("set")
@friendly
def limits_set(
    max_active_tokens: Annotated[int | None, typer.Option(help="New limit (1-100000).")] = None,
    user: Annotated[str | None, typer.Option(help="A user's email (with --tenant: their membership there).")] = None,
    tenant: Annotated[str | None, typer.Option(help="A tenant's name (alone: the whole tenant).")] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Remove the override (back to the default).")] = False,
    max_service_tokens: Annotated[
        int | None, typer.Option(help="The tenant's limit of active service tokens (1-100000; with --tenant).")
    ] = None,
) -> None:
    """Raise (or reset) the active-token limit of one membership or a whole tenant. The limit counts per
    membership: for a person in several tenants, give --user EMAIL --tenant NAME. With --max-service-tokens N
    and --tenant alone: the tenant's own limit of active service tokens (default 25)."""
    if max_service_tokens is not None:
        if tenant is None or user is not None or max_active_tokens is not None or reset:
            raise fail("give --max-service-tokens N with --tenant NAME alone")
        services().access.set_service_limit(OPERATOR, tenant, max_service_tokens)
        typer.echo(f"service-token limit for tenant {tenant} is now {max_service_tokens}")
        return
    if user is None and tenant is None:
        raise fail("give --user EMAIL (and --tenant NAME for a person in several tenants), or --tenant NAME")
    if reset == (max_active_tokens is not None):
        raise fail("give --max-active-tokens N, or --reset")
    if user is not None:
        services().access.set_limit(OPERATOR, max_active_tokens, user_email=user, membership_tenant=tenant)
    else:
        services().access.set_limit(OPERATOR, max_active_tokens, tenant_name=tenant)
    target = f"user {user}" + (f" in {tenant}" if tenant else "") if user else f"tenant {tenant}"
    shown = "the default" if max_active_tokens is None else str(max_active_tokens)
    typer.echo(f"active-token limit for {target} is now {shown}")


# ---- tokens (support) ------------------------------------------------------------------------
@tokens_app.command("list")
@friendly
def tokens_list(
    user: Annotated[str | None, typer.Option(help="Only this user's tokens (email).")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's tokens.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List tokens (never their secrets): id, owner, name, prefix, status, expiry, last use."""
    rows = services().tokens.list_for_support(user_email=user, tenant_name=tenant)
    if as_json:
        print_json(
            {
                "tokens": [
                    {
                        "id": t.id,
                        "owner": email or None,
                        "service": t.service,
                        "name": t.name,
                        "prefix": t.prefix,
                        "scopes": t.scopes,
                        "status": t.status,
                        "created_at": t.created_at,
                        "expires_at": t.expires_at,
                        "last_used_at": t.last_used_at,
                    }
                    for email, t in rows
                ]
            }
        )
        return
    if not rows:
        typer.echo("no tokens")
        return
    typer.echo(f"{'ID':>6}  {'OWNER':<28} {'NAME':<28} {'PREFIX':<13} {'STATUS':<8} {'EXPIRES':<21} LAST USED")
    for email, t in rows:
        owner = "(service token)" if t.service else email
        typer.echo(
            f"{t.id:>6}  {owner[:28]:<28} {t.name[:28]:<28} {t.prefix:<13} {t.status:<8} "
            f"{iso(t.expires_at) or 'Never':<21} {iso(t.last_used_at) or 'Never'}"
        )


@tokens_app.command("revoke")
@friendly
def tokens_revoke(token_id: Annotated[int, typer.Argument(help="Token id (see `kbai tokens list`).")]) -> None:
    """Revoke a token now (idempotent)."""
    view = services().tokens.revoke(OPERATOR, token_id)
    typer.echo(f"token {view.id} ({view.prefix}, {view.name}) is {view.status}")


# ---- leak scan -------------------------------------------------------------------------------
SCAN_FOUND_ACTIVE = 3  # exit code: at least one active token of this deployment was found


@app.command()
@friendly
def scan(
    path: Annotated[
        Path, typer.Argument(help="File or folder to search (recursively; .git and binary files are skipped).")
    ],
    revoke: Annotated[
        bool, typer.Option("--revoke", help="Revoke every active token found and notify its owner and tenant admins.")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Report progress on stderr.")] = True,
) -> None:
    """Find kbai tokens in files and say which are active tokens of this deployment (needs database access).

    Prints file:line and the display prefix only, never a token. Exits with 3 when an active token was found.
    """
    from kbai.lifecycle.leaks import Sighting
    from kbai.lifecycle.scan import Finding, iter_files, scan_file

    if not path.exists():
        raise fail(f"{path}: no such file or folder")
    files = list(iter_files(path))
    findings: list[Finding] = []
    unreadable = 0
    for file in _progress(files, enabled=progress):
        try:
            findings.extend(scan_file(file))
        except OSError as exc:
            unreadable += 1
            typer.secho(
                f"warning: skipped {file}: {exc.strerror or type(exc).__name__}", err=True, fg=typer.colors.YELLOW
            )
    svc = services()
    found = svc.tokens.find_by_digests(f.digest for f in findings)
    counts = {"active": 0, "revoked": 0, "expired": 0, "unknown": 0}
    active: dict[str, list[Sighting]] = {}
    for f in findings:
        hit = found.get(f.digest)
        status = hit.view.status if hit else "unknown"
        counts[status] += 1
        if hit is None:
            verdict = "unknown: not a token of this deployment"
        else:
            owner = f'token {hit.view.id} "{hit.view.name}" of {hit.owner_email}'
            verdict = {"active": f"ACTIVE: {owner}", "revoked": f"revoked: {owner}", "expired": f"expired: {owner}"}[
                status
            ]
        if status == "active":
            active.setdefault(f.digest, []).append(Sighting(url=f"{f.path}:{f.line}", source="file"))
        typer.echo(f"{f.path}:{f.line}: {f.prefix}… {verdict}")
    typer.echo(
        f"{len(findings)} token(s) in {len({f.path for f in findings})} of {len(files)} file(s): "
        + ", ".join(f"{n} {status}" for status, n in counts.items())
    )
    if unreadable:
        typer.echo(f"{unreadable} file(s) could not be read")
    if active and revoke:
        svc.leaks.respond(OPERATOR, "kbai scan", active)
        typer.echo(f"revoked {len(active)} active token(s); their owners and tenant admins were notified")
    elif active:
        typer.echo("revoke them now: kbai scan --revoke PATH (or kbai tokens revoke ID)")
    if active:
        raise typer.Exit(SCAN_FOUND_ACTIVE)


def _progress(files: list[Path], *, enabled: bool) -> Iterator[Path]:
    """Yield ``files``, reporting progress on stderr: a bar on a terminal, a line every 2 s otherwise."""
    if not enabled:
        yield from files
        return
    if sys.stderr.isatty():
        with click.progressbar(files, label="scanning", file=sys.stderr, show_pos=True) as bar:
            yield from bar
        return
    typer.echo(f"scanning {len(files)} file(s)...", err=True)
    last = time.monotonic()
    for done, file in enumerate(files, start=1):
        yield file
        if time.monotonic() - last >= 2:
            last = time.monotonic()
            typer.echo(f"scanned {done}/{len(files)} file(s)", err=True)


def _credential_json(c: Any) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "client_id": c.client_id,
        "created_at": c.created_at,
        "revoked_at": c.revoked_at,
        "status": c.status,
        "abilities": list(c.abilities),
    }


@credential_app.command("create")
@friendly
def credential_create(
    name: Annotated[str, typer.Argument(help="What will use it, e.g. 'contacts-api'.")],
    allow: Annotated[
        str,
        typer.Option(
            "--allow",
            help="What it may do, comma-separated: introspect (RFC 7662), tenants (the operator API's "
            "tenants and memberships), tokens (tokens issued on a person's behalf).",
        ),
    ] = "introspect",
    as_json: JsonFlag = False,
) -> None:
    """Issue a client id and secret (HTTP Basic) for introspection and, with --allow, the operator API. The
    secret is shown once."""
    credential, secret = services().credentials.create(OPERATOR, name, allow)
    if as_json:
        print_json(
            {"id": credential.id, "name": credential.name, "client_id": credential.client_id, "client_secret": secret}
        )
    else:
        typer.echo(f"client_id: {credential.client_id}")
        typer.echo(f"client_secret: {secret}")
    typer.echo("The secret is shown once: store it in your secrets manager now.", err=True)


@credential_app.command("list")
@friendly
def credential_list(as_json: JsonFlag = False) -> None:
    """List service credentials, active and revoked (never their secrets)."""
    views = services().credentials.list(OPERATOR)
    if as_json:
        print_json({"service_credentials": [_credential_json(c) for c in views]})
        return
    if not views:
        typer.echo("no service credentials")
        return
    typer.echo(f"{'CLIENT ID':<25} {'NAME':<30} {'STATUS':<8} {'CREATED':<21} {'REVOKED':<21} ALLOWED")
    for c in views:
        typer.echo(
            f"{c.client_id:<25} {c.name[:30]:<30} {c.status:<8} {iso(c.created_at):<21} "
            f"{iso(c.revoked_at) or '-':<21} {','.join(c.abilities)}"
        )


@credential_app.command("revoke")
@friendly
def credential_revoke(
    client_id: Annotated[str, typer.Argument(help="The client id (see `kbai service-credential list`).")],
    as_json: JsonFlag = False,
) -> None:
    """Revoke a service credential now: introspection refuses it at once (idempotent)."""
    view = services().credentials.revoke(OPERATOR, client_id)
    if as_json:
        print_json(_credential_json(view))
    else:
        typer.echo(f"service credential {view.client_id} ({view.name}) is {view.status}")


def _scim_json(c: Any) -> dict[str, Any]:
    return {
        "id": c.id,
        "tenant_id": c.tenant_id,
        "name": c.name,
        "prefix": c.prefix,
        "created_at": c.created_at,
        "last_used_at": c.last_used_at,
        "revoked_at": c.revoked_at,
        "status": c.status,
    }


@scim_app.command("create")
@friendly
def scim_token_create(
    tenant: Annotated[str, typer.Option(help="Tenant name.")],
    name: Annotated[str, typer.Option(help="What will use it, e.g. 'Okta'.")] = "SCIM",
    as_json: JsonFlag = False,
) -> None:
    """Issue a SCIM provisioning credential for TENANT. The secret is printed once, alone on the last line."""
    svc = services()
    view, secret = svc.provisioning.create(OPERATOR, svc.provisioning.tenant_id(tenant), name)
    if as_json:
        print_json({**_scim_json(view), "token": secret, "scim_path": "/scim/v2"})
    else:
        typer.echo(f"provisioning credential {view.id} ({view.name}) for tenant '{tenant}'")
        typer.echo("SCIM base URL: https://<this kbai deployment>/scim/v2 (Bearer: the secret below)")
        typer.echo(secret)
    typer.echo("The secret is shown once: paste it into your identity provider now.", err=True)


@scim_app.command("list")
@friendly
def scim_token_list(tenant: Annotated[str, typer.Option(help="Tenant name.")], as_json: JsonFlag = False) -> None:
    """List a tenant's provisioning credentials, active and revoked (never their secrets)."""
    svc = services()
    views = svc.provisioning.list(OPERATOR, svc.provisioning.tenant_id(tenant))
    if as_json:
        print_json({"scim_credentials": [_scim_json(c) for c in views]})
        return
    if not views:
        typer.echo("no provisioning credentials")
        return
    typer.echo(f"{'ID':<6} {'PREFIX':<16} {'NAME':<30} {'STATUS':<8} {'CREATED':<21} LAST USED")
    for c in views:
        typer.echo(
            f"{c.id:<6} {c.prefix:<16} {c.name[:30]:<30} {c.status:<8} {iso(c.created_at):<21} "
            f"{iso(c.last_used_at) or '-'}"
        )


@scim_app.command("revoke")
@friendly
def scim_token_revoke(
    credential_id: Annotated[int, typer.Argument(help="The credential's id (see `kbai scim-token list`).")],
    tenant: Annotated[str, typer.Option(help="Tenant name.")],
    as_json: JsonFlag = False,
) -> None:
    """Revoke a provisioning credential now: its next SCIM request is refused (idempotent)."""
    svc = services()
    view = svc.provisioning.revoke(OPERATOR, svc.provisioning.tenant_id(tenant), credential_id)
    if as_json:
        print_json(_scim_json(view))
    else:
        typer.echo(f"provisioning credential {view.id} ({view.name}) is {view.status}")


# ---- token lifecycle: worker and policies ---------------------------------------------------------
@app.command()
@friendly
def worker(
    once: Annotated[bool, typer.Option("--once", help="Run one pass and exit (for cron and tests).")] = False,
    interval: Annotated[
        float | None, typer.Option(help="Seconds between passes (default KBAI_WORKER_INTERVAL_SECONDS).", min=0.1)
    ] = None,
) -> None:
    """Send due expiry reminders (email, in-app, webhook), apply auto-revoke policies, prune idempotency keys.

    Safe to run several at once: each reminder and each revocation happens exactly once.
    """
    import signal
    import threading

    from kbai import logs
    from kbai.lifecycle.worker import Worker
    from kbai.store.idempotency import IdempotencyStore

    svc = services()
    logs.configure(svc.settings.log_level)
    job = Worker(svc.reminders, svc.auto_revoke, svc.outbox, IdempotencyStore(svc.db, svc.clock))
    if once:
        result = job.run_once()
        typer.echo(
            f"reminders sent: {result.reminders_sent}, failed: {result.reminders_failed}, "
            f"auto-revoked: {result.auto_revoked}, deliveries: {result.deliveries_sent}, "
            f"delivery failures: {result.deliveries_failed}"
        )
        if result.reminders_failed or result.deliveries_failed:
            raise typer.Exit(1)
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    every = interval or svc.settings.worker_interval_seconds
    typer.echo(f"kbai worker: a pass every {every:g} s (database: {_safe_url(svc.settings.database_url)})")
    job.run_forever(every, stop)


@policy_app.command("set")
@friendly
def policy_set(
    tenant: Annotated[str, typer.Option(help="Tenant name.")],
    max_lifetime_days: Annotated[
        int | None, typer.Option(help="Longest token lifetime in days; 0 removes the rule.")
    ] = None,
    expiration_required: Annotated[
        bool | None, typer.Option("--expiration-required/--no-expiration-required", help="Every new token must expire.")
    ] = None,
    auto_revoke_unused_days: Annotated[
        int | None, typer.Option(help="Revoke tokens unused for N days (by `kbai worker`); 0 turns it off.")
    ] = None,
    webhook_url: Annotated[str | None, typer.Option(help="http(s) URL for signed events; '' removes it.")] = None,
    new_webhook_secret: Annotated[
        bool, typer.Option("--new-webhook-secret", help="Generate a new signing secret.")
    ] = False,
) -> None:
    """Change a tenant's token policy (only the options given change)."""
    from kbai.tokens.policy import UNSET

    svc = services()
    policy, secret = svc.policies.set(
        OPERATOR,
        svc.policies.tenant_id(tenant),
        max_lifetime_days=UNSET if max_lifetime_days is None else (max_lifetime_days or None),
        expiration_required=UNSET if expiration_required is None else expiration_required,
        auto_revoke_unused_days=UNSET if auto_revoke_unused_days is None else (auto_revoke_unused_days or None),
        webhook_url=UNSET if webhook_url is None else (webhook_url or None),
        new_webhook_secret=new_webhook_secret,
    )
    _print_policy(tenant, policy)
    if secret:
        typer.echo(f"webhook secret: {secret}   (shown once; give it to the webhook's receiver now)")


@policy_app.command("show")
@friendly
def policy_show(tenant: Annotated[str, typer.Option(help="Tenant name.")]) -> None:
    """Print a tenant's token policy."""
    svc = services()
    _print_policy(tenant, svc.policies.get(svc.policies.tenant_id(tenant)))


def _print_policy(tenant: str, policy: Any) -> None:
    def days(value: int | None) -> str:
        return "none" if value is None else f"{value} days"

    typer.echo(
        f"policy of {tenant}: max lifetime {days(policy.max_lifetime_days)}, "
        f"expiration required: {'yes' if policy.expiration_required else 'no'}, "
        f"auto-revoke unused: {days(policy.auto_revoke_unused_days)}, "
        f"webhook: {policy.webhook_url or 'none'}"
    )


def main() -> None:
    """The console script: usage errors are one ``error:`` line and exit 2, bugs one line and exit 70."""
    command = typer.main.get_command(app)
    try:
        code = command.main(prog_name="kbai", standalone_mode=False)
    except typer.Abort:  # Ctrl-C or Ctrl-D at a prompt
        typer.echo("", err=True)
        sys.exit(130)
    except typer.TyperException as exc:  # Typer's own (vendored Click) errors: exit code 2 marks usage errors
        ctx = getattr(exc, "ctx", None)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if not message and ctx is not None:  # bare `kbai` or `kbai GROUP` (no_args_is_help): Typer showed the help
            sys.exit(EXIT_USAGE)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        typer.secho(f"error: {' '.join(message.split())}{where}", fg=typer.colors.RED, err=True)
        sys.exit(EXIT_USAGE if getattr(exc, "exit_code", 1) == EXIT_USAGE else 1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - a bug: still one line, never a traceback with secrets
        from kbai.tokenformat import redact

        message = " ".join(redact(str(exc)).split())[:300]
        typer.secho(
            f"error: unexpected {type(exc).__name__}: {message} (a bug in kbai; please report it)",
            fg=typer.colors.RED,
            err=True,
        )
        sys.exit(EXIT_BUG)
    sys.exit(code if isinstance(code, int) else 0)
