"""The scanner rules in integrations/secret-scanning/ really match kbai tokens, and only them.

detect-secrets runs for real (its CLI, with our plugin file). gitleaks and TruffleHog are Go
binaries that cannot be installed here, so their rules are applied the way those tools apply them:
keyword prefilter, the regex (kept to the RE2 subset both engines share), the secret group, then the
Shannon-entropy threshold over that group.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import re
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from kbai import tokenformat as fmt

RULES = Path(__file__).parents[2] / "integrations" / "secret-scanning"
DETECT_SECRETS = str(Path(sys.executable).parent / "detect-secrets")
PLUGIN = RULES / "kbai_detect_secrets.py"
SECRET_TYPE = "kbai API token"

ZEROS = fmt.PREFIX + "0" * 64


def shannon(text: str) -> float:
    """Shannon entropy in bits per character, as gitleaks and TruffleHog compute it."""
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values()) if text else 0.0


def wrong_lengths() -> list[str]:
    t = fmt.mint()
    return [t[:-1], t + "a", t + "0f", fmt.PREFIX + t[len(fmt.PREFIX) :].upper(), t[:-1] + "g"]


def contexts(token: str) -> list[str]:
    """Ways a token lands in a repository."""
    return [
        f"KBAI_TOKEN={token}\n",
        f'{{"token": "{token}"}}',
        f"curl -H 'Authorization: Bearer {token}' https://api.example.test",
        f"token: {token}",
        f'"first line\\n{token}"',
        token,
    ]


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


# ---- gitleaks ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gitleaks_rule() -> dict[str, Any]:
    config = tomllib.loads((RULES / ".gitleaks.toml").read_text())
    assert config["extend"]["useDefault"] is True
    [rule] = [r for r in config["rules"] if r["id"] == "kbai-api-token"]
    return rule


def assert_re2_subset(pattern: str) -> None:
    # RE2 has no look-around and no back-references; Python's re and RE2 agree on the rest used here.
    for construct in ("(?=", "(?!", "(?<=", "(?<!", "\\1", "(?P="):
        assert construct not in pattern, construct


def gitleaks_finds(rule: dict[str, Any], text: str) -> list[str]:
    if not any(k.lower() in text.lower() for k in rule["keywords"]):
        return []
    found = []
    for m in re.finditer(rule["regex"], text, flags=re.ASCII):
        secret = m.group(rule.get("secretGroup", 0))
        if "entropy" in rule and shannon(secret) <= rule["entropy"]:
            continue
        found.append(secret)
    return found


def test_gitleaks_rule_finds_minted_tokens_in_any_context(gitleaks_rule: dict[str, Any]) -> None:
    assert_re2_subset(gitleaks_rule["regex"])
    for _ in range(500):
        token = fmt.mint()
        for text in contexts(token):
            hits = gitleaks_finds(gitleaks_rule, text)
            found = hits == [token]
            assert found, (
                f"missed a token (digest {fmt.digest(token)[:12]}) in context {contexts('X').index(text.replace(token, 'X'))}"
            )


def test_gitleaks_rule_ignores_wrong_lengths_and_placeholders(gitleaks_rule: dict[str, Any]) -> None:
    for text in [*wrong_lengths(), ZEROS, f"KBAI_TOKEN={ZEROS}", "kbai_pk_", "kbai_pk_<your token here>"]:
        assert gitleaks_finds(gitleaks_rule, text) == [], text[:12]
    # The zeros are dropped by the entropy check, not by the regex (so the threshold matters).
    assert re.search(gitleaks_rule["regex"], ZEROS, flags=re.ASCII)
    assert shannon(ZEROS) < 1 < gitleaks_rule["entropy"] < 3.5 < min(shannon(fmt.mint()) for _ in range(2000))


# ---- TruffleHog ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trufflehog_detector() -> dict[str, Any]:
    config = yaml.safe_load((RULES / "trufflehog.yaml").read_text())
    [detector] = [d for d in config["detectors"] if d["name"] == "kbai API token"]
    assert set(detector) <= {
        "name",
        "description",
        "keywords",
        "regex",
        "entropy",
        "exclude_regexes_match",
        "exclude_regexes_capture",
        "exclude_words",
        "verify",
        "validations",
        "primary_regex_name",
    }
    return detector


def trufflehog_finds(detector: dict[str, Any], text: str) -> list[str]:
    if not any(k.lower() in text.lower() for k in detector["keywords"]):
        return []
    found = []
    for pattern in detector["regex"].values():
        assert_re2_subset(pattern)
        for m in re.finditer(pattern, text, flags=re.ASCII):
            secret = m.group(1) if m.re.groups else m.group(0)
            if shannon(secret) < detector.get("entropy", 0):
                continue
            if any(re.search(x, secret) for x in detector.get("exclude_regexes_match", [])):
                continue
            found.append(secret)
    return found


def test_trufflehog_detector_finds_tokens_and_only_tokens(trufflehog_detector: dict[str, Any]) -> None:
    for _ in range(200):
        token = fmt.mint()
        for text in contexts(token):
            found = trufflehog_finds(trufflehog_detector, text) == [token]
            assert found, f"missed a token (digest {fmt.digest(token)[:12]})"
    for text in [*wrong_lengths(), ZEROS, f"KBAI_TOKEN={ZEROS}"]:
        assert trufflehog_finds(trufflehog_detector, text) == [], text[:12]


# ---- detect-secrets --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plugin_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kbai_detect_secrets", PLUGIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_detect_secrets_plugin_api(plugin_module: ModuleType) -> None:
    detector = plugin_module.KbaiTokenDetector()
    for _ in range(500):
        token = fmt.mint()
        for text in contexts(token):
            found = list(detector.analyze_string(text)) == [token]
            assert found, f"missed a token (digest {fmt.digest(token)[:12]})"
    for text in [*wrong_lengths(), ZEROS]:
        assert list(detector.analyze_string(text)) == [], text[:12]


def test_detect_secrets_cli_with_our_plugin(tmp_path: Path) -> None:
    token = fmt.mint()
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "settings.env").write_text(f"# integration settings\nKBAI_TOKEN={token}\nOTHER=1\n")
    (repo / "wrong_length.env").write_text("".join(f"KBAI_TOKEN={w}\n" for w in wrong_lengths()))
    (repo / "placeholder.env").write_text(f"KBAI_TOKEN={ZEROS}\n")
    result = subprocess.run(
        [DETECT_SECRETS, "scan", "--all-files", "--plugin", str(PLUGIN), "."],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    baseline = json.loads(result.stdout)
    ours = {name: [r for r in results if r["type"] == SECRET_TYPE] for name, results in baseline["results"].items()}
    ours = {name: rs for name, rs in ours.items() if rs}
    assert list(ours) == ["settings.env"]
    [finding] = ours["settings.env"]
    assert finding["line_number"] == 2 and finding["hashed_secret"] == sha1(token)
    # The baseline records our plugin, so `detect-secrets-hook --baseline` keeps using it.
    assert any(p.get("path", "").endswith("kbai_detect_secrets.py") for p in baseline["plugins_used"])
    leaked = token in result.stdout + result.stderr
    assert not leaked


def test_detect_secrets_hook_blocks_a_commit_with_a_new_token(tmp_path: Path) -> None:
    """The pre-commit path: a baseline made with our plugin, then the hook on a file with a new token."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "app.py").write_text("print('hello')\n")
    baseline = subprocess.run(
        [DETECT_SECRETS, "scan", "--all-files", "--plugin", str(PLUGIN), "."],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert baseline.returncode == 0, baseline.stderr[-2000:]
    (repo / ".secrets.baseline").write_text(baseline.stdout)
    hook = str(Path(sys.executable).parent / "detect-secrets-hook")
    token = fmt.mint()
    (repo / "config.py").write_text(f'KBAI_TOKEN = "{token}"\n')
    blocked = subprocess.run(
        [hook, "--baseline", ".secrets.baseline", "config.py"], cwd=repo, capture_output=True, text=True, timeout=120
    )
    assert blocked.returncode == 1
    assert SECRET_TYPE in blocked.stdout
    (repo / "config.py").write_text(f'KBAI_TOKEN = "{ZEROS}"\n')
    clean = subprocess.run(
        [hook, "--baseline", ".secrets.baseline", "config.py"], cwd=repo, capture_output=True, text=True, timeout=120
    )
    assert clean.returncode == 0, clean.stdout[-2000:]


# ---- one definition, four mirrors ----------------------------------------------------------------
def test_every_rule_agrees_with_the_format_module(
    gitleaks_rule: dict[str, Any], trufflehog_detector: dict[str, Any], plugin_module: ModuleType
) -> None:
    detector = plugin_module.KbaiTokenDetector()
    tokens = [fmt.mint() for _ in range(3)]
    text = "\n".join([f"a={tokens[0]}", f"b='{tokens[1]}' c={wrong_lengths()[0]}", f"{tokens[2]}.", "kbai_pk_x"])
    expected = [t for _, t in fmt.find_all(text)]
    assert expected == tokens and all(fmt.is_well_formed(t) for t in expected)
    assert gitleaks_finds(gitleaks_rule, text) == expected
    assert trufflehog_finds(trufflehog_detector, text) == expected
    assert list(detector.analyze_string(text)) == expected


# ---- SCIM provisioning credentials: a second rule in each file ---------------------------------------
def test_every_scanner_finds_scim_credentials_and_ignores_placeholders(plugin_module: ModuleType) -> None:
    config = tomllib.loads((RULES / ".gitleaks.toml").read_text())
    [gl] = [r for r in config["rules"] if r["id"] == "kbai-scim-credential"]
    assert_re2_subset(gl["regex"])
    [th] = [
        d
        for d in yaml.safe_load((RULES / "trufflehog.yaml").read_text())["detectors"]
        if d["name"] == "kbai SCIM provisioning credential"
    ]
    ds = plugin_module.KbaiScimCredentialDetector()
    for _ in range(200):
        secret = fmt.mint_scim()
        for text in contexts(secret):
            assert gitleaks_finds(gl, text) == [secret]
            assert trufflehog_finds(th, text) == [secret]
            assert list(ds.analyze_string(text)) == [secret]
        assert gitleaks_finds(gl, secret + "a") == [] and list(ds.analyze_string(secret + "_")) == []
    placeholder = "kbai_scim_" + "0" * 64
    for text in (placeholder, "kbai_scim_", "kbai_scim_" + "a1" * 31):
        assert gitleaks_finds(gl, text) == [] and trufflehog_finds(th, text) == [] and not list(ds.analyze_string(text))
    # A token rule never takes a SCIM credential for a token, nor the other way round.
    [token_rule] = [r for r in config["rules"] if r["id"] == "kbai-api-token"]
    assert gitleaks_finds(token_rule, fmt.mint_scim()) == []
    assert gitleaks_finds(gl, fmt.mint()) == []
