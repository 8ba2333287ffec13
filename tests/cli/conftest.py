"""Failure reports in this folder are redacted (see tests/tokens/reporting.py)."""

from tests.tokens.reporting import pytest_runtest_makereport  # noqa: F401 - a pytest hook
