"""The README tells the truth about configuration: every setting is documented, nothing invented."""

import re
from pathlib import Path

from kbai.config import Settings

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme() -> None:
    for name in Settings.model_fields:
        assert f"`KBAI_{name.upper()}`" in README, name


def test_the_readme_names_no_setting_that_does_not_exist() -> None:
    documented = set(re.findall(r"`KBAI_([A-Z0-9_]+)`", README)) - {"REQUIRE_SERVICES", "UPDATE_SCREENSHOTS"}
    known = {n.upper() for n in Settings.model_fields}
    assert documented <= known, documented - known
