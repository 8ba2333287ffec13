"""`kbai scan PATH`: finds tokens in a tree (skipping .git and binary files), says file:line, the display
prefix only and whether each is an active token of ours; exit code 3 when one is active."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kbai import tokenformat as fmt
from kbai.clock import FrozenClock
from kbai.services import Services
from tests.conftest import KBAI_BIN, World, server_env


def run(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KBAI_BIN, "scan", *args], env=server_env(database_url), capture_output=True, text=True, timeout=120
    )


def tree(root: Path, active: str, revoked: str, unknown: str) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "app.env").write_text(f"# settings\nNAME=demo\nKBAI_TOKEN={active}\n")
    (root / "sub" / "old.yaml").write_text(f"token: {revoked}\n")
    (root / "sub" / "deeper" / "notes.md").write_text(f"found this: `{unknown}`\nand `{active[:-1]}`\n")
    (root / "sub" / "image.bin").write_bytes(b"\x89PNG\0\0" + active.encode() + b"\0")
    (root / ".git" / "config").write_text(f"token = {active}\n")
    (root / "clean.txt").write_text("nothing here\n")


def test_scan_reports_verdicts_prefixes_only_and_exit_code(world: World, database_url: str, tmp_path: Path) -> None:
    svc: Services = world.services
    active = svc.tokens.create(world.dev, "Zapier production", ["users.read"])[1]
    revoked_view, revoked = svc.tokens.create(world.dev, "old script", ["users.read"])
    svc.tokens.revoke(world.dev, revoked_view.id)
    unknown = fmt.mint()
    root = tmp_path / "checkout"
    root.mkdir()
    tree(root, active, revoked, unknown)

    result = run(database_url, str(root))
    assert result.returncode == 3, result.stderr
    lines = result.stdout.splitlines()
    p = fmt.display_prefix
    assert f'{root}/app.env:3: {p(active)}… ACTIVE: token 1 "Zapier production" of dev@acme.test' in lines
    assert f'{root}/sub/old.yaml:1: {p(revoked)}… revoked: token 2 "old script" of dev@acme.test' in lines
    assert f"{root}/sub/deeper/notes.md:1: {p(unknown)}… unknown: not a token of this deployment" in lines
    assert sum(1 for line in lines if "…" in line) == 3  # not .git, not the binary, not the short one
    assert "3 token(s) in 3 of 5 file(s): 1 active, 1 revoked, 0 expired, 1 unknown" in lines
    assert "scanning 5 file(s)" in result.stderr  # progress goes to stderr
    output = result.stdout + result.stderr
    for token in (active, revoked, unknown):
        leaked = token[len(fmt.PREFIX) :] in output
        assert not leaked, f"token {fmt.digest(token)[:12]} printed"
    assert svc.tokens.verify(active).outcome.value == "valid"  # a scan alone changes nothing


def test_scan_revoke_revokes_and_notifies(world: World, database_url: str, tmp_path: Path, clock: FrozenClock) -> None:
    svc = world.services
    active = svc.tokens.create(world.dev, "Zapier production", ["users.read"])[1]
    leak = tmp_path / "checkout" / "leak.txt"
    leak.parent.mkdir()
    leak.write_text(f"{active}\n")
    result = run(database_url, "--revoke", "--no-progress", str(leak))
    assert result.returncode == 3, result.stderr
    assert "revoked 1 active token(s)" in result.stdout and result.stderr == ""
    clock.set(datetime.now(UTC) + timedelta(seconds=2))  # the command ran on the real clock
    assert svc.tokens.verify(active).outcome.value == "revoked"
    [note] = svc.notifications.list(world.dev.user_id)  # type: ignore[arg-type]
    assert f"{leak}:1" in note.body and "kbai scan" in note.body
    # Scanning again: the same token is now reported as revoked, and nothing is active.
    again = run(database_url, str(leak.parent))
    assert again.returncode == 0 and "revoked: token 1" in again.stdout


def test_clean_tree_and_mistakes(world: World, database_url: str, tmp_path: Path) -> None:
    (tmp_path / "checkout").mkdir()
    (tmp_path / "checkout" / "a.txt").write_text("kbai_pk_" + "0" * 63 + "\n")
    clean = run(database_url, str(tmp_path / "checkout"))
    assert clean.returncode == 0 and "0 token(s) in 0 of 1 file(s)" in clean.stdout
    missing = run(database_url, str(tmp_path / "nope"))
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: {tmp_path / 'nope'}: no such file or folder"
