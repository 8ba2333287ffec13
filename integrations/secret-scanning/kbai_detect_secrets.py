"""detect-secrets plugin for kbai developer API tokens (``kbai_pk_`` + 64 lowercase hex characters) and
SCIM provisioning credentials (``kbai_scim_`` + 64).

    detect-secrets scan --plugin path/to/kbai_detect_secrets.py > .secrets.baseline

The baseline remembers the plugin's path, so the pre-commit hook (``detect-secrets-hook --baseline
.secrets.baseline``) uses it too. Standalone on purpose: it needs only detect-secrets, not kbai.
"""

import math
import re
from collections import Counter
from collections.abc import Generator

from detect_secrets.plugins.base import RegexBasedDetector

PREFIX = "kbai_pk_"
# Bits per character of the 64 hex characters. A real token (32 random bytes) scores about 3.9;
# placeholders such as 64 zeros or a repeated short pattern score far lower.
MIN_HEX_ENTROPY = 3.0


def shannon_entropy(text: str) -> float:
    if not text:
        return 0.0
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


class KbaiTokenDetector(RegexBasedDetector):
    """Scans for kbai developer API tokens."""

    secret_type = "kbai API token"

    # Exactly 64 lowercase hex characters: not followed by another word character.
    denylist = (re.compile(r"(kbai_pk_[0-9a-f]{64})(?![0-9A-Za-z_])"),)

    def analyze_string(self, string: str) -> Generator[str, None, None]:
        for match in super().analyze_string(string):
            if shannon_entropy(match[len(PREFIX) :]) > MIN_HEX_ENTROPY:
                yield match


class KbaiScimCredentialDetector(RegexBasedDetector):
    """Scans for kbai SCIM provisioning credentials."""

    secret_type = "kbai SCIM provisioning credential"

    denylist = (re.compile(r"(kbai_scim_[0-9a-f]{64})(?![0-9A-Za-z_])"),)

    def analyze_string(self, string: str) -> Generator[str, None, None]:
        for match in super().analyze_string(string):
            if shannon_entropy(match[len("kbai_scim_") :]) > MIN_HEX_ENTROPY:
                yield match
