"""Belt and braces for rule 4 in test output: failure reports are redacted before pytest shows them.

The tests compare digests and use ``assert_no_secret`` so a failing assertion has nothing to show,
but pytest's assertion introspection, tracebacks and Hypothesis' falsifying examples could still
quote a token. Each test folder's conftest imports this hook, which cuts every token-shaped string
in a report to its display prefix.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from kbai.tokenformat import redact


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.longrepr is not None and not report.skipped:
        text = str(report.longrepr)
        cleaned = redact(text)
        if cleaned != text:
            report.longrepr = cleaned
    report.sections = [(title, redact(content)) for title, content in report.sections]
