"""Properties of the verification pipeline (``kbai.tokens.verify.verify``), driven by Hypothesis.

A fake lookup stands in for storage, so every record and clock is generated: these tests are pure
and not parametrized by backend. The parser's own properties (what ``is_well_formed`` accepts) live
in ``test_format.py``; here the subject is what ``verify`` does with any input, record and time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from kbai.access.catalog import Catalog
from kbai.tokens.verify import Outcome, TokenRecord, Verification, verify

HEX = "0123456789abcdef"
KEYS = sorted(Catalog.load(None).keys) + ["contacts.read", "contacts.write"]  # built-ins + operator-style
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


class FakeLookup:
    """Records every digest it is asked for and answers with one fixed record (or None)."""

    def __init__(self, record: TokenRecord | None) -> None:
        self.record = record
        self.calls: list[str] = []

    def __call__(self, token_digest: str) -> TokenRecord | None:
        self.calls.append(token_digest)
        return self.record


def _exact_format(candidate: object) -> bool:
    """The oracle, without regular expressions: ``kbai_pk_`` and exactly 64 lowercase hex chars."""
    return (
        isinstance(candidate, str)
        and len(candidate) == 72
        and candidate[:8] == "kbai_pk_"
        and all(ch in HEX for ch in candidate[8:])
    )


# ---- strategies --------------------------------------------------------------------------------
tokens = st.binary(min_size=32, max_size=32).map(lambda b: "kbai_pk_" + b.hex())


@st.composite
def near_misses(draw: st.DrawFn) -> str:
    """A real-looking token with one twist: a changed, inserted or dropped char, case, padding, look-alikes."""
    token = draw(tokens)
    twist = draw(st.sampled_from(["replace", "insert", "delete", "upper", "pad", "lookalike"]))
    i = draw(st.integers(min_value=0, max_value=len(token) - 1))
    if twist == "replace":
        return token[:i] + draw(st.characters()) + token[i + 1 :]
    if twist == "insert":
        return token[:i] + draw(st.characters()) + token[i:]
    if twist == "delete":
        return token[:i] + token[i + 1 :]
    if twist == "upper":
        return token.upper() if draw(st.booleans()) else token[:8] + token[8:].upper()
    if twist == "pad":
        return draw(st.sampled_from([" ", "\t", "\n", "=", "\u00a0", "\u200b", "\ufeff"])).join(
            draw(st.sampled_from([("", token), (token, ""), ("", token, "")]))
        )
    # Cyrillic а/е/с, fullwidth digits and letters, Arabic-Indic digits: each looks like hex to a person.
    lookalike = {"a": "\u0430", "e": "\u0435", "c": "\u0441", "0": "\uff10", "1": "\u0661", "b": "\uff42"}
    return "".join(lookalike.get(ch, ch) if j == i or j < 4 else ch for j, ch in enumerate(token))


presented = st.one_of(
    st.text(),
    tokens,
    near_misses(),
    st.text(alphabet=HEX + "ABCDEF_kbaip", min_size=60, max_size=80).map(lambda s: "kbai_pk_" + s),
    st.none(),
    st.integers(),
    st.floats(),
    st.binary(),
    st.lists(st.text(max_size=3), max_size=3),
    tokens.map(str.encode),  # the right bytes, but not a str
)

times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
perms = st.frozensets(st.sampled_from(KEYS))
required_scopes = st.lists(st.sampled_from(KEYS + ["not.in.catalog"]), max_size=6)


@st.composite
def records(draw: st.DrawFn) -> TokenRecord:
    created = draw(times)
    return TokenRecord(
        token_id=draw(st.integers(min_value=1, max_value=2**31 - 1)),
        tenant_id=draw(st.integers(min_value=1, max_value=1000)),
        tenant_name="Acme",
        user_id=draw(st.integers(min_value=1, max_value=1000)),
        email="dev@acme.test",
        prefix="kbai_pk_a1b2",
        name="generated",
        scopes=draw(perms),
        created_at=created,
        expires_at=draw(st.none() | times),
        revoked_at=draw(st.none() | times),
        owner_active=draw(st.booleans()),
        owner_permissions=draw(perms),
    )


def _run(record: TokenRecord | None, now: datetime, required: Iterable[str] = ()) -> tuple[Verification, FakeLookup]:
    lookup = FakeLookup(record)
    token = "kbai_pk_" + "ab" * 32
    return verify(token, lookup, now, tuple(required)), lookup


# ---- format first: nothing malformed reaches storage ---------------------------------------------
@given(presented)
def test_malformed_unless_exactly_a_token_and_malformed_never_calls_the_lookup(candidate: object) -> None:
    lookup = FakeLookup(None)
    result = verify(candidate, lookup, NOW)
    if _exact_format(candidate):
        assert result.outcome is Outcome.UNKNOWN
        assert isinstance(candidate, str)
        assert lookup.calls == [hashlib.sha256(candidate.encode("ascii")).hexdigest()]
    else:
        assert result.outcome is Outcome.MALFORMED
        assert lookup.calls == []
        assert result.record is None and result.scopes == frozenset() and not result.authenticated


@given(tokens, records(), times, required_scopes)
def test_a_well_formed_token_is_looked_up_once_by_its_digest_only(
    token: str, record: TokenRecord, now: datetime, required: list[str]
) -> None:
    lookup = FakeLookup(record)
    result = verify(token, lookup, now, required)
    assert lookup.calls == [hashlib.sha256(token.encode()).hexdigest()]
    assert result.outcome not in (Outcome.MALFORMED, Outcome.UNKNOWN)
    assert result.record is record


@given(presented, st.none() | records(), times, required_scopes)
def test_verify_never_raises_and_always_returns_an_outcome(
    candidate: object, record: TokenRecord | None, now: datetime, required: list[str]
) -> None:
    result = verify(candidate, FakeLookup(record), now, required)
    assert isinstance(result, Verification) and result.outcome in set(Outcome)
    assert result.ok == (result.outcome is Outcome.VALID)
    assert result.authenticated == (result.outcome in (Outcome.VALID, Outcome.INSUFFICIENT_SCOPE))


# ---- records and clocks ------------------------------------------------------------------------
@given(records(), times, required_scopes)
def test_outcome_follows_the_checks_in_their_fixed_order(
    record: TokenRecord, now: datetime, required: list[str]
) -> None:
    result, _ = _run(record, now, required)
    revoked = record.revoked_at is not None and record.revoked_at <= now
    expired = record.expires_at is not None and record.expires_at <= now
    assert (result.outcome is Outcome.REVOKED) == revoked
    assert (result.outcome is Outcome.EXPIRED) == (expired and not revoked)
    assert (result.outcome is Outcome.OWNER_INACTIVE) == (not record.owner_active and not revoked and not expired)
    if not revoked and not expired and record.owner_active:
        assert result.outcome in (Outcome.VALID, Outcome.INSUFFICIENT_SCOPE)


@given(records(), times, required_scopes)
def test_effective_scopes_are_within_token_scopes_and_owner_permissions(
    record: TokenRecord, now: datetime, required: list[str]
) -> None:
    result, _ = _run(record, now, required)
    assert result.scopes <= record.scopes & record.owner_permissions
    if result.authenticated:
        assert result.scopes == record.scopes & record.owner_permissions


@given(records(), times, required_scopes)
def test_valid_implies_every_required_scope_is_held(record: TokenRecord, now: datetime, required: list[str]) -> None:
    result, _ = _run(record, now, required)
    if result.outcome is Outcome.VALID:
        assert set(required) <= result.scopes
        assert result.missing == ()
    if result.outcome is Outcome.INSUFFICIENT_SCOPE:
        assert result.missing, "an insufficient scope names what is missing"
        assert len(set(result.missing)) == len(result.missing)
        assert all(s in required and s not in result.scopes for s in result.missing)
        # In the order asked for, so the error message reads like the request.
        assert list(result.missing) == [s for s in dict.fromkeys(required) if s not in result.scopes]


@given(records(), st.integers(min_value=-2_000_000, max_value=2_000_000))
def test_expiry_is_exact_expires_at_itself_is_expired(record: TokenRecord, offset_us: int) -> None:
    expires = record.created_at + timedelta(days=1)
    live = replace(record, expires_at=expires, revoked_at=None, owner_active=True)
    result, _ = _run(live, expires + timedelta(microseconds=offset_us))
    assert (result.outcome is Outcome.EXPIRED) == (offset_us >= 0)


@given(records(), st.integers(min_value=-2_000_000, max_value=2_000_000))
def test_revocation_is_exact_revoked_at_itself_is_revoked(record: TokenRecord, offset_us: int) -> None:
    revoked = record.created_at + timedelta(hours=1)
    scheduled = replace(record, revoked_at=revoked, expires_at=None)
    result, _ = _run(scheduled, revoked + timedelta(microseconds=offset_us))
    assert (result.outcome is Outcome.REVOKED) == (offset_us >= 0)


@given(records(), times, times)
def test_a_revoked_or_expired_token_never_becomes_good_again(record: TokenRecord, t1: datetime, t2: datetime) -> None:
    earlier, later = sorted((t1, t2))
    first, _ = _run(record, earlier)
    second, _ = _run(record, later)
    if first.outcome is Outcome.REVOKED:
        assert second.outcome is Outcome.REVOKED
    if first.outcome is Outcome.EXPIRED:
        assert second.outcome in (Outcome.EXPIRED, Outcome.REVOKED)


@given(records(), times, st.data())
def test_taking_permissions_from_the_owner_never_widens_a_token(
    record: TokenRecord, now: datetime, data: st.DataObject
) -> None:
    fewer = data.draw(
        st.frozensets(st.sampled_from(sorted(record.owner_permissions)))
        if record.owner_permissions
        else st.just(frozenset())
    )
    narrowed = replace(record, owner_permissions=fewer)
    before, _ = _run(record, now)
    after, _ = _run(narrowed, now)
    assert after.scopes <= before.scopes
    assert after.outcome == before.outcome  # scopes alone never change revoked/expired/inactive/valid


@given(records(), times, required_scopes)
def test_an_inactive_owner_never_authenticates(record: TokenRecord, now: datetime, required: list[str]) -> None:
    inactive = replace(record, owner_active=False)
    result, _ = _run(inactive, now, required)
    assert not result.authenticated and result.scopes == frozenset()
