"""Lint and types in the test command: ``ruff check``, ``ruff format --check`` and ``mypy`` (configured in
pyproject.toml) pass, and the configuration catches what it is there for: a stale or blanket ``# noqa`` /
``# type: ignore``, an unused import, a type mistake."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from tests.conftest import missing_service

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyproject.toml"


def _run(tool: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(tool) is None:
        missing_service(f"{tool} (the test extra: ./scripts/setup.sh --test)")
    return subprocess.run([sys.executable, "-m", tool, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def _report(proc: subprocess.CompletedProcess[str], fix: str) -> str:
    return f"{' '.join(map(str, proc.args[2:]))} failed ({fix}):\n{proc.stdout}{proc.stderr}"


def test_ruff_check_finds_nothing() -> None:
    proc = _run("ruff", "check", "--no-fix", "--output-format", "concise", ".")
    assert proc.returncode == 0, _report(
        proc, "fix it, `ruff check --fix` for the fixable ones, or add `# noqa: CODE - why` where the rule is wrong"
    )


def test_code_is_ruff_formatted() -> None:
    proc = _run("ruff", "format", "--check", "--output-format", "concise", ".")
    assert proc.returncode == 0, _report(proc, "run `ruff format` on the files listed")


def test_mypy_finds_nothing() -> None:
    proc = _run("mypy")  # the files and options are in [tool.mypy]
    assert proc.returncode == 0, _report(
        proc, "fix the types, or add `# type: ignore[code]  # why` where the library's types are wrong"
    )


def test_ruff_rejects_stale_and_blanket_noqa_and_unused_imports(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\nX = 1  # noqa: F401\nY = 2  # noqa\n", encoding="utf-8")
    proc = _run(
        "ruff",
        "check",
        "--no-fix",
        "--no-cache",
        "--output-format",
        "concise",
        "--config",
        str(CONFIG),
        str(bad),
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert {"F401", "RUF100", "PGH004"} <= {word for line in proc.stdout.splitlines() for word in line.split()}


def test_mypy_rejects_stale_and_blanket_ignores_and_type_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f(x: int) -> str:\n"
        "    return x\n"  # a mistake
        "\n"
        "\n"
        "y: int = 1  # type: ignore[assignment]\n",  # stale
        encoding="utf-8",
    )
    proc = _run("mypy", "--config-file", str(CONFIG), "--no-incremental", str(bad), cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[return-value]" in proc.stdout and "[unused-ignore]" in proc.stdout, proc.stdout
