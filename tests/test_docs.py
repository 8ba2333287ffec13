"""The README tells the truth about configuration: every setting is documented, nothing invented."""

import re
from pathlib import Path

from kbai.config import Settings

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme() -> None:
    for name in Settings.model_fields:
        assert f"`KBAI_{name.upper()}`" in README, name


ROOT = Path(__file__).parent.parent


def _test_only() -> set[str]:
    """The variables of the README's "Test-only variables" table."""
    table = README[README.index("Test-only variables") :].split("\n\n", 2)[1]
    return set(re.findall(r"^\| `KBAI_([A-Z0-9_]+)`", table, re.M))


def test_the_readme_names_no_setting_that_does_not_exist() -> None:
    documented = set(re.findall(r"`KBAI_([A-Z0-9_]+)`", README)) - _test_only()
    known = {n.upper() for n in Settings.model_fields}
    assert documented <= known, documented - known


def test_every_test_only_variable_is_read_by_the_tests_or_scripts() -> None:
    sources = "".join(
        p.read_text(encoding="utf-8")
        for folder in ("tests", "scripts", ".ci")
        for p in (ROOT / folder).rglob("*")
        if p.is_file() and p.suffix in (".py", ".sh", "") and "node_modules" not in p.parts
    )
    assert {"REQUIRE_SERVICES", "TEST_PG_URL", "TEST_REDIS_URL"} <= _test_only()
    unread = {name for name in _test_only() if f"KBAI_{name}" not in sources}
    assert not unread, unread


def _operator_block() -> str:
    start = README.index("Operators use the CLI.")
    return README[start:].split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_readme_points_at_nothing_outside_the_repository() -> None:
    assert "../" not in README and "shared/SPEC" not in README


def test_the_readmes_operator_commands_run_as_written(tmp_path: Path) -> None:
    """Each line of the operator block, in order, in bash from the repository (after command 1 made .venv),
    with only the database moved to a temporary folder. Lines with a placeholder (ID, CLIENT_ID), the
    worker (it runs until stopped) and --install-completion (it edits your shell's start-up file) are left
    out; the hidden prompt, which needs a terminal, gets its password from stdin instead."""
    import subprocess

    lines = []
    for line in _operator_block().splitlines():
        command = line.split("  #")[0].strip()
        if (
            not command
            or " ID" in command
            or "CLIENT_ID" in command
            or command.startswith(("kbai worker",))
            or "--install-completion" in command
        ):
            continue
        command = command.replace('"sqlite:///$PWD/kbai.db"', f'"sqlite:///{tmp_path}/kbai.db"')
        command = command.replace("--password-prompt", "--password-stdin <<< 'readme-password-1'")
        lines.append(command)
    assert lines[:2] == ["source .venv/bin/activate", f'export KBAI_DATABASE_URL="sqlite:///{tmp_path}/kbai.db"']
    assert len(lines) >= 12
    script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("KBAI_")}
    env.update(KBAI_ARGON2_TIME_COST="1", KBAI_ARGON2_MEMORY_KIB="64", KBAI_ARGON2_PARALLELISM="1")
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "created tenant Globex" in done.stdout and "client_id: kbai_sc_" in done.stdout
    assert (tmp_path / "kbai.db").exists()
