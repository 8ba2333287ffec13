"""docs/security.md and docs/reliability.md tell the truth: every test they name exists, and every
count in reliability.md is recomputed here from the test tables it describes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOCS = {name: (ROOT / "docs" / name).read_text(encoding="utf-8") for name in ("security.md", "reliability.md")}
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_every_test_named_in_the_docs_exists(doc: str) -> None:
    found = REFERENCE.findall(DOCS[doc])
    assert len(found) >= 20
    missing = []
    for path, name in found:
        file = ROOT / path
        if not file.exists():
            missing.append(path)
        elif name and not re.search(rf"^(?:async )?def {name}\(|^def {name}\b", file.read_text(encoding="utf-8"), re.M):
            missing.append(f"{path}::{name}")
    assert not missing, f"{doc} names tests that do not exist: {missing}"


def test_the_secrets_fixture_named_in_security_md_exists() -> None:
    assert "`secrets_never_logged`" in DOCS["security.md"]
    assert "def secrets_never_logged(" in (ROOT / "tests" / "conftest.py").read_text(encoding="utf-8")


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start) : text.index(end, text.index(start))]


def test_the_bad_input_counts_are_those_of_the_table() -> None:
    from tests.web.test_hostile_input import CASES

    section = _section(DOCS["reliability.md"], "## Bad inputs tried", "Beyond the table")
    rows: dict[tuple[str, ...], int] = {}
    for line in section.splitlines():
        m = re.match(r"^\|[^|]+\|\s*((?:`[a-z-]+`(?:, )?)+)(?: \(the rest\))?\s*\|\s*(\d+)\s*\|$", line)
        if m:
            rows[tuple(re.findall(r"`([a-z-]+)`", m.group(1)))] = int(m.group(2))
    prefixes = {p: key for key in rows for p in key}
    counted = dict.fromkeys(rows, 0)
    unmatched = []
    for case in CASES:
        matching = [p for p in prefixes if case.id.startswith(p)]
        if not matching:
            unmatched.append(case.id)
            continue
        counted[prefixes[max(matching, key=len)]] += 1
    assert not unmatched, f"cases in no row of reliability.md: {unmatched}"
    assert counted == rows
    total = re.search(r"\*\*all cases\*\* \| \| \*\*(\d+)\*\*", section)
    assert total and int(total.group(1)) == len(CASES)


def test_the_other_counts_are_those_of_the_tests() -> None:
    from tests.tokens import test_properties
    from tests.web import test_isolation, test_page_isolation, test_schemathesis, test_schemathesis_stateful
    from tests.web.test_hostile_input import CLI_CASES, INJECTIONS, LIVE, LIVE_EXTRA

    doc = DOCS["reliability.md"]
    properties = len([n for n in dir(test_properties) if n.startswith("test_")])
    iso = len(test_isolation.ENDPOINTS), len(test_isolation.ATTACKERS)
    lists = len(test_page_isolation.LISTS), len(test_page_isolation.ATTACKERS)
    expected = [
        f"| {len(LIVE)} | `tests/web/test_hostile_input.py::test_over_real_http",
        f"| {len(LIVE_EXTRA)} | same test |",
        f"| {len(CLI_CASES)} | `tests/web/test_hostile_input.py::test_cli_refuses",
        f"| {len(INJECTIONS)} + {len(INJECTIONS)} |",
        f"| up to {test_schemathesis.MAX_EXAMPLES} |",
        f"| {test_schemathesis_stateful.SCENARIOS} | `tests/web/test_schemathesis_stateful.py",
        f"up to {test_schemathesis_stateful.MAX_STEPS} calls each",
        f"| {properties} | `tests/tokens/test_properties.py` |",
        f"| {iso[0]} routes × {iso[1]} = {iso[0] * iso[1]} |",
        f"| {len(test_page_isolation.PAIRS)} | `tests/web/test_page_isolation.py",
        f"| {lists[0]} pages × {lists[1]} = {lists[0] * lists[1]} |",
    ]
    missing = [text for text in expected if text not in doc]
    assert not missing, f"reliability.md has stale counts; expected to find: {missing}"
