"""The token format: ``kbai_pk_`` + 64 lowercase hex chars, a 12-char display prefix, and redaction.

Pure functions, no database: these tests are not parametrized by backend.
"""

from __future__ import annotations

import hashlib
import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kbai import tokenformat as fmt

TOKEN_RE = re.compile(r"kbai_pk_[0-9a-f]{64}")
HEX_LOWER = "0123456789abcdef"


def _is_exact_format(text: object) -> bool:
    """An oracle written without regular expressions: exactly the prefix and 64 lowercase hex chars."""
    return (
        isinstance(text, str) and len(text) == 72 and text[:8] == "kbai_pk_" and all(ch in HEX_LOWER for ch in text[8:])
    )


# ---- minting ----------------------------------------------------------------------------------
def test_a_thousand_minted_tokens_match_the_format_and_are_distinct() -> None:
    tokens = [fmt.mint() for _ in range(1000)]
    malformed = sum(1 for t in tokens if TOKEN_RE.fullmatch(t) is None)
    assert malformed == 0
    assert len(set(tokens)) == 1000
    assert all(len(t) == 72 for t in tokens)


def test_minted_secrets_use_all_hex_digits() -> None:
    # 1000 * 64 random hex chars: every one of the 16 digits shows up (a fixed or narrow alphabet would not).
    seen = set("".join(fmt.mint()[8:] for _ in range(1000)))
    assert seen == set(HEX_LOWER)


def test_display_prefix_is_the_first_12_chars() -> None:
    for _ in range(100):
        token = fmt.mint()
        prefix = fmt.display_prefix(token)
        assert len(prefix) == 12 == fmt.DISPLAY_PREFIX_LENGTH
        assert prefix == token[:12]
        assert prefix.startswith("kbai_pk_")
        assert all(ch in HEX_LOWER for ch in prefix[8:])


def test_digest_is_sha256_hex_of_the_token() -> None:
    token = fmt.mint()
    assert fmt.digest(token) == hashlib.sha256(token.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", fmt.digest(token))
    assert fmt.digest(token) != token[8:]


# ---- the parser -------------------------------------------------------------------------------
def test_minted_token_is_well_formed() -> None:
    assert fmt.is_well_formed(fmt.mint())


def _replace_at(token: str, index: int, ch: str) -> str:
    return token[:index] + ch + token[index + 1 :]


def _token_with(ch: str) -> str:
    """A minted token whose last secret char is replaced by ``ch``."""
    return _replace_at(fmt.mint(), 71, ch)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda t: t.upper(), id="all-upper-case"),
        pytest.param(lambda t: "KBAI_PK_" + t[8:], id="upper-case-prefix"),
        pytest.param(lambda t: t[:8] + "ABCDEF" + t[14:], id="upper-case-secret"),
        pytest.param(lambda t: _replace_at(t, 71, "A"), id="one-upper-case-hex-char"),
        pytest.param(lambda t: " " + t, id="leading-space"),
        pytest.param(lambda t: t + " ", id="trailing-space"),
        pytest.param(lambda t: t + "\n", id="trailing-newline"),
        pytest.param(lambda t: "\t" + t, id="leading-tab"),
        pytest.param(lambda t: t + "=", id="base64-padding"),
        pytest.param(lambda t: t + "\x00", id="trailing-nul"),
        pytest.param(lambda t: "\ufeff" + t, id="leading-bom"),
        pytest.param(lambda t: t + "\u200b", id="trailing-zero-width-space"),
        pytest.param(lambda t: t[:-1], id="one-char-short"),
        pytest.param(lambda t: t + "0", id="one-char-long"),
        pytest.param(lambda t: t[:40], id="truncated"),
        pytest.param(lambda t: t + t[8:], id="doubled-secret"),
        pytest.param(lambda t: t[8:], id="secret-without-prefix"),
        pytest.param(lambda t: "kbai_pk_", id="prefix-only"),
        pytest.param(lambda t: "", id="empty"),
        pytest.param(lambda t: "kbai-pk-" + t[8:], id="dashes-instead-of-underscores"),
        pytest.param(lambda t: "kbai_sk_" + t[8:], id="other-prefix"),
        pytest.param(lambda t: "Bearer " + t, id="with-bearer-scheme"),
        pytest.param(lambda t: _replace_at(t, 71, "g"), id="non-hex-letter"),
        pytest.param(lambda t: _replace_at(t, 71, "\u0430"), id="cyrillic-a"),
        pytest.param(lambda t: _replace_at(t, 2, "\u0430"), id="cyrillic-a-in-prefix"),
        pytest.param(lambda t: t[:8] + "\u0430" * 64, id="all-cyrillic-a"),
        pytest.param(lambda t: _replace_at(t, 71, "\uff10"), id="fullwidth-zero"),
        pytest.param(lambda t: t[:8] + "\uff11" * 64, id="all-fullwidth-one"),
        pytest.param(lambda t: "\uff4bbai_pk_" + t[8:], id="fullwidth-k-in-prefix"),
        pytest.param(lambda t: _replace_at(t, 71, "\u0660"), id="arabic-indic-zero"),
        pytest.param(lambda t: _replace_at(t, 71, "\u0967"), id="devanagari-one"),
        pytest.param(lambda t: _replace_at(t, 71, "\u00e9"), id="latin-e-acute"),
        pytest.param(lambda t: _replace_at(t, 4, "\u2010"), id="unicode-hyphen-for-underscore"),
    ],
)
def test_is_well_formed_rejects(make) -> None:
    candidate = make(fmt.mint())
    assert not _is_exact_format(candidate)  # the case really is malformed
    assert fmt.is_well_formed(candidate) is False


@pytest.mark.parametrize(
    "candidate",
    [
        None,
        0,
        123,
        1.5,
        True,
        b"kbai_pk_" + b"0" * 64,
        bytearray(b"kbai_pk_" + b"0" * 64),
        ["kbai_pk_" + "0" * 64],
        {"token": "kbai_pk_" + "0" * 64},
        object(),
    ],
    ids=["none", "zero", "int", "float", "bool", "bytes", "bytearray", "list", "dict", "object"],
)
def test_is_well_formed_rejects_non_str(candidate: object) -> None:
    assert fmt.is_well_formed(candidate) is False


def test_is_well_formed_checks_the_format_not_the_entropy() -> None:
    # All-zero and all-f secrets are odd but well-formed; upper case is not.
    assert fmt.is_well_formed("kbai_pk_" + "0" * 64)
    assert fmt.is_well_formed("kbai_pk_" + "f" * 64)
    assert not fmt.is_well_formed("kbai_pk_" + "F" * 64)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_is_accepted_only_when_exactly_the_format(text: str) -> None:
    assert fmt.is_well_formed(text) == _is_exact_format(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=HEX_LOWER + "ABCDEFgxyz_ \n\u0430\uff10\u0660", min_size=60, max_size=70))
def test_prefixed_near_misses_are_rejected_unless_exact(secret: str) -> None:
    candidate = "kbai_pk_" + secret
    assert fmt.is_well_formed(candidate) == _is_exact_format(candidate)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(min_value=0, max_value=71), st.characters())
def test_a_one_char_change_is_rejected_unless_it_stays_in_the_format(secret: bytes, index: int, ch: str) -> None:
    token = "kbai_pk_" + secret.hex()
    mutated = _replace_at(token, index, ch)
    expected = mutated == token or (index >= 8 and ch in HEX_LOWER)
    assert fmt.is_well_formed(mutated) is expected


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(min_value=0, max_value=72), st.characters())
def test_an_inserted_char_is_always_rejected(secret: bytes, index: int, ch: str) -> None:
    token = "kbai_pk_" + secret.hex()
    assert fmt.is_well_formed(token[:index] + ch + token[index:]) is False


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(min_value=0, max_value=71))
def test_a_deleted_char_is_always_rejected(secret: bytes, index: int) -> None:
    token = "kbai_pk_" + secret.hex()
    assert fmt.is_well_formed(token[:index] + token[index + 1 :]) is False


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_any_32_bytes_in_the_format_are_accepted(secret: bytes) -> None:
    assert fmt.is_well_formed("kbai_pk_" + secret.hex())


@settings(max_examples=100, deadline=None)
@given(st.integers())
def test_any_minted_token_is_accepted(_: int) -> None:
    assert fmt.is_well_formed(fmt.mint())


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"kbai_pk_[0-9a-f]{64}", fullmatch=True))
def test_every_string_of_the_format_is_accepted(token: str) -> None:
    assert fmt.is_well_formed(token)


# ---- redaction --------------------------------------------------------------------------------
def test_redact_cuts_a_token_to_its_prefix() -> None:
    token = fmt.mint()
    out = fmt.redact(f"Authorization: Bearer {token}")
    leaked = token in out or token[8:] in out or token[12:] in out
    assert not leaked
    assert out == f"Authorization: Bearer {token[:12]}…"


def test_redact_cuts_every_token_in_a_text() -> None:
    tokens = [fmt.mint() for _ in range(3)]
    text = f"first={tokens[0]}, second={tokens[1]}\nthird:{tokens[2]}."
    out = fmt.redact(text)
    leaked = [t for t in tokens if t[12:] in out]
    assert leaked == []
    assert out == f"first={tokens[0][:12]}…, second={tokens[1][:12]}…\nthird:{tokens[2][:12]}…."


def test_redact_also_cuts_upper_case_and_overlong_token_lookalikes() -> None:
    token = fmt.mint()
    for variant in (token[:8] + token[8:].upper(), token.upper(), "Kbai_Pk_" + token[8:], token + "abcdef", token[:40]):
        out = fmt.redact(f"x {variant} y")
        leaked = variant[12:] in out
        assert not leaked
        assert out == f"x {variant[:12]}… y"


def test_redact_leaves_text_without_tokens_alone() -> None:
    text = "nothing secret here: kbai_pk_ and kbai_sk_" + "0" * 64 + " " + string.ascii_letters
    assert fmt.redact(text) == text
