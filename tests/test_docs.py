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
    table = README[README.index("Test-only variables"):].split("\n\n", 2)[1]
    return set(re.findall(r"^\| `KBAI_([A-Z0-9_]+)`", table, re.M))


def test_the_readme_names_no_setting_that_does_not_exist() -> None:
    documented = set(re.findall(r"`KBAI_([A-Z0-9_]+)`", README)) - _test_only()
    known = {n.upper() for n in Settings.model_fields}
    assert documented <= known, documented - known


def test_every_test_only_variable_is_read_by_the_tests_or_scripts() -> None:
    sources = "".join(p.read_text(encoding="utf-8") for folder in ("tests", "scripts", ".ci")
                      for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in (".py", ".sh", ""))
    assert {"REQUIRE_SERVICES", "TEST_PG_URL", "TEST_REDIS_URL"} <= _test_only()
    unread = {name for name in _test_only() if f"KBAI_{name}" not in sources}
    assert not unread, unread
