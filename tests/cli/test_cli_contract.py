"""What scripts and operators rely on from the ``kbai`` command: exit codes (1 mistake, 2 usage, 70
bug), one ``error:`` line, passwords never needed on argv (stdin or a hidden prompt), ``--json``,
``--version`` and shell completion. Runs the real console script."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kbai
from kbai.config import Settings
from kbai.services import Services
from tests.cli.test_cli import KBAI, _env
from tests.conftest import FAST_ARGON2

FULL_TOKEN = "kbai_pk_" + "ab" * 32


def run(database_url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KBAI, *args], env=_env(database_url), input=stdin, capture_output=True, text=True, timeout=120
    )


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == code, (result.args, result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Usage:" not in result.stdout + result.stderr
    return lines[0]


USAGE_MISTAKES = {
    "unknown option": ("tokens", "list", "--bogus"),
    "missing option": ("user", "create", "--email", "x@acme.test"),
    "not an integer": ("tokens", "revoke", "abc"),
    "unknown command": ("tokenz", "list"),
    "extra argument": ("db", "upgrade", "now"),
    "out of range": ("serve", "--port", "70000"),
}


@pytest.mark.parametrize("case", sorted(USAGE_MISTAKES))
def test_usage_errors_are_one_error_line_and_exit_2(case: str, tmp_path: Path) -> None:
    line = one_line(run(f"sqlite:///{tmp_path / 'kbai.db'}", *USAGE_MISTAKES[case]), 2)
    assert "--help" in line
    assert not (tmp_path / "kbai.db").exists(), "nothing was done"


def test_a_bug_is_one_redacted_error_line_and_exit_70(tmp_path: Path) -> None:
    # A real kbai process with one extra command that fails the way a bug would.
    script = (
        "import sys\nfrom kbai import cli\n"
        "@cli.app.command('boom')\ndef boom() -> None:\n"
        f"    raise RuntimeError('bad state near {FULL_TOKEN}')\n"
        "sys.argv = ['kbai', 'boom']\ncli.main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=_env(f"sqlite:///{tmp_path / 'x.db'}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = one_line(done, 70)
    assert "unexpected RuntimeError" in line and "a bug in kbai" in line
    assert FULL_TOKEN not in line and FULL_TOKEN[:12] in line


def test_version_and_shell_completion(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kbai.db'}"
    done = run(url, "--version")
    assert (done.returncode, done.stdout) == (0, f"kbai {kbai.__version__}\n")
    done = run(url, "--show-completion", "bash")
    assert done.returncode == 0 and "_KBAI_COMPLETE" in done.stdout
    env = {
        **_env(url),
        "_KBAI_COMPLETE": "complete_bash",
        "COMP_WORDS": "kbai service-credential re",
        "COMP_CWORD": "2",
    }
    done = subprocess.run([KBAI], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["revoke"]


def _services(url: str) -> Services:
    return Services.build(Settings(database_url=url, **FAST_ARGON2))


def test_passwords_come_from_stdin_or_a_hidden_prompt(database_url: str) -> None:
    svc = _services(database_url)
    try:
        done = run(
            database_url,
            "tenant",
            "create",
            "Acme",
            "--admin-email",
            "a@acme.test",
            "--admin-password-stdin",
            stdin="stdin-password-1\nignored\n",
        )
        assert done.returncode == 0 and "stdin-password-1" not in done.stdout + done.stderr, done.stderr
        assert svc.access.authenticate("a@acme.test", "stdin-password-1").email == "a@acme.test"

        # On argv it still works, with a warning on stderr (ps and shell history show it).
        done = run(
            database_url,
            "user",
            "create",
            "--tenant",
            "Acme",
            "--email",
            "b@acme.test",
            "--password",
            "argv-password-1",
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr.startswith("warning: --password on the command line") and "--password-stdin" in done.stderr
        assert svc.access.authenticate("b@acme.test", "argv-password-1").email == "b@acme.test"

        assert "standard input has no password" in one_line(
            run(database_url, "user", "set-password", "--email", "b@acme.test", "--password-stdin", stdin=""), 1
        )

        # A hidden prompt on a real terminal: typed twice, never echoed.
        output, code = _on_a_terminal(
            database_url,
            ["user", "set-password", "--email", "b@acme.test", "--password-prompt"],
            ["prompt-password-1", "prompt-password-1"],
        )
        assert code == 0, output.replace("prompt-password-1", "<password>")
        assert output.count("Password") == 1 and "Repeat for confirmation" in output
        assert "prompt-password-1" not in output, "the password is not echoed"
        assert svc.access.authenticate("b@acme.test", "prompt-password-1").email == "b@acme.test"
    finally:
        svc.close()


def _on_a_terminal(database_url: str, args: list[str], lines: list[str]) -> tuple[str, int]:
    """Run kbai on a pseudo-terminal, typing ``lines`` when it waits; returns everything it showed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [KBAI, *args],
        env=_env(database_url),
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
        start_new_session=True,
    )
    os.close(follower)
    shown, pending = b"", list(lines)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
            # The prompt ends with ": " once getpass has turned echo off (it writes the space itself).
            if pending and shown.endswith(b": "):
                os.write(leader, pending.pop(0).encode() + b"\n")
        elif proc.poll() is not None:
            break
    os.close(leader)
    return shown.decode(errors="replace"), proc.wait(timeout=30)


def test_json_on_creations_and_listings(database_url: str) -> None:
    made = json.loads(run(database_url, "tenant", "create", "Acme", "--admin-email", "a@acme.test", "--json").stdout)
    assert made["name"] == "Acme" and made["admin"]["email"] == "a@acme.test" and len(made["password"]) >= 12
    user = json.loads(
        run(
            database_url, "user", "create", "--tenant", "Acme", "--email", "d@acme.test", "--role", "Member", "--json"
        ).stdout
    )
    assert user["email"] == "d@acme.test" and user["roles"] == ["Member"] and user["active"] is True
    listed = json.loads(run(database_url, "tokens", "list", "--json").stdout)
    assert listed == {"tokens": []}
    creds = json.loads(run(database_url, "service-credential", "list", "--json").stdout)
    assert creds == {"service_credentials": []}


def test_tokens_list_shows_service_tokens_as_the_tenants(database_url: str) -> None:
    from kbai.config import Settings
    from kbai.services import Services
    from tests.conftest import FAST_ARGON2, build_world

    svc = Services.build(Settings(database_url=database_url, **FAST_ARGON2))
    try:
        world = build_world(svc)
        view, _ = svc.tokens.create_service(world.admin, "deploys", ["users.read"])
    finally:
        svc.close()
    listed = json.loads(run(database_url, "tokens", "list", "--json").stdout)["tokens"]
    row = next(t for t in listed if t["id"] == view.id)
    assert (row["owner"], row["service"], row["name"]) == (None, True, "deploys")
    text = run(database_url, "tokens", "list", "--tenant", "Acme").stdout
    line = next(x for x in text.splitlines() if x.strip().startswith(str(view.id)))
    assert "(service token)" in line and view.prefix in line
