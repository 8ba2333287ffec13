"""Per-token restrictions that verification enforces: the IP allowlist, the rate limit and the quota (their
shapes; counting is :mod:`kbai.tokens.limits`), and the description's rules.

An allowlist is a list of CIDR strings (IPv4 and IPv6, at most :data:`MAX_ALLOWED_IPS`), normalised
when saved (``10.1.2.3/24`` is kept as ``10.1.2.0/24``, a bare address as a /32 or /128), parsed once
when a token's record is loaded, and kept in the cached record: checking an address on a warm
request is arithmetic, no I/O. An IPv4 address that arrives IPv4-mapped (``::ffff:10.1.2.3``, from a
dual-stack socket) is judged as the IPv4 address it is.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from kbai import errors
from kbai.errors import KbaiError
from kbai.validate import clean_text

MAX_ALLOWED_IPS = 50
MAX_CIDR_LENGTH = 50
MAX_DESCRIPTION = 500

MAX_RATE_REQUESTS = 1_000_000_000
MAX_QUOTA = 2_000_000_000
PER_SECONDS = {"second": 1, "minute": 60, "hour": 3600}
REFILL_INTERVALS = ("day", "month")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RateLimit:
    """At most ``requests`` per ``per`` (a fixed UTC window: the second, the minute, the hour)."""

    requests: int
    per: str

    @property
    def seconds(self) -> int:
        return PER_SECONDS[self.per]

    def json(self) -> dict[str, Any]:
        return {"requests": self.requests, "per": self.per}

    def text(self) -> str:
        return f"{self.requests:,} per {self.per}"


@dataclass(frozen=True)
class Quota:
    """``remaining`` requests left; with a refill, set back to ``refill_amount`` at each UTC midnight
    (``day``) or on the first of each month (``month``)."""

    remaining: int
    refill_amount: int | None = None
    refill_interval: str | None = None

    def json(self) -> dict[str, Any]:
        refill = (
            {"amount": self.refill_amount, "interval": self.refill_interval} if self.refill_amount is not None else None
        )
        return {"remaining": self.remaining, "refill": refill}


def period_start(now: datetime, interval: str) -> datetime:
    """The start of the refill period (UTC) that ``now`` is in."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day if interval == "day" else day.replace(day=1)


def next_refill(now: datetime, interval: str) -> datetime:
    start = period_start(now, interval)
    if interval == "day":
        return start + timedelta(days=1)
    return (start + timedelta(days=32)).replace(day=1)


def _count(value: object, low: int, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def clean_rate_limit(value: object) -> RateLimit | None:
    """``{"requests": N, "per": "second" | "minute" | "hour"}``, or None (``null``: no limit)."""
    if value is None:
        return None
    bad = KbaiError(errors.INVALID_RATE_LIMIT, max=f"{MAX_RATE_REQUESTS:,}")
    if not isinstance(value, dict) or set(value) != {"requests", "per"}:
        raise bad
    requests, per = _count(value["requests"], 1, MAX_RATE_REQUESTS), value["per"]
    if requests is None or per not in PER_SECONDS:
        raise bad
    return RateLimit(requests, str(per))


def clean_quota(value: object) -> Quota | None:
    """``{"remaining": N, "refill": {"amount": N, "interval": "day" | "month"} | null}``, or None (no quota)."""
    if value is None:
        return None
    bad = KbaiError(errors.INVALID_QUOTA, min=0, max=f"{MAX_QUOTA:,}")
    if not isinstance(value, dict) or "remaining" not in value or not set(value) <= {"remaining", "refill"}:
        raise bad
    remaining = _count(value["remaining"], 0, MAX_QUOTA)
    if remaining is None:
        raise bad
    refill = value.get("refill")
    if refill is None:
        return Quota(remaining)
    if not isinstance(refill, dict) or set(refill) != {"amount", "interval"}:
        raise bad
    amount = _count(refill["amount"], 1, MAX_QUOTA)
    if amount is None or refill["interval"] not in REFILL_INTERVALS:
        raise bad
    return Quota(remaining, amount, str(refill["interval"]))


def clean_allowlist(value: object) -> list[str] | None:
    """The allowlist to store: normalised CIDR strings without repeats, or None for "any address"
    (``null`` or an empty list)."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise KbaiError(
            errors.VALIDATION, detail='allowed_ips must be a list of CIDR strings, e.g. ["203.0.113.0/24"].'
        )
    if len(value) > MAX_ALLOWED_IPS:
        raise KbaiError(
            errors.VALIDATION, detail=f"allowed_ips has {len(value)} entries; the most is {MAX_ALLOWED_IPS}."
        )
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip() or len(item) > MAX_CIDR_LENGTH:
            raise KbaiError(
                errors.VALIDATION,
                detail='allowed_ips must be a list of CIDR strings, e.g. ["203.0.113.0/24", "2001:db8::/32"].',
            )
        try:
            network = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise KbaiError(errors.INVALID_CIDR, value=_shown(item)) from None
        text = str(network)
        if text not in out:
            out.append(text)
    return out or None


def clean_description(value: object) -> str | None:
    """A free-text note of at most 500 characters (None or blank: no description)."""
    if value is None:
        return None
    return clean_text(value, "description", MAX_DESCRIPTION)


class Allowlist(tuple[Network, ...]):
    """The parsed networks of an allowlist, with their merged spans per IP version computed once (``spans``),
    so that checking an address is one binary search, whatever the length of the list."""

    spans: dict[int, tuple[list[int], list[int]]]


@lru_cache(maxsize=4096)
def networks(cidrs: tuple[str, ...]) -> Allowlist:
    parsed = Allowlist(ipaddress.ip_network(c, strict=False) for c in cidrs)
    parsed.spans = _spans(parsed)
    return parsed


@lru_cache(maxsize=16384)
def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _spans(allowed: Iterable[Network]) -> dict[int, tuple[list[int], list[int]]]:
    """Per IP version, the allowed networks as merged, sorted integer spans (starts, ends): a lookup is
    one binary search, whatever the length of the list."""
    by_version: dict[int, list[tuple[int, int]]] = {}
    for n in allowed:
        by_version.setdefault(n.version, []).append((int(n.network_address), int(n.broadcast_address)))
    out: dict[int, tuple[list[int], list[int]]] = {}
    for version, spans in by_version.items():
        starts: list[int] = []
        ends: list[int] = []
        for lo, hi in sorted(spans):
            if ends and lo <= ends[-1] + 1:
                ends[-1] = max(ends[-1], hi)
            else:
                starts.append(lo)
                ends.append(hi)
        out[version] = (starts, ends)
    return out


def ip_allowed(allowed: Iterable[Network], ip: str) -> bool:
    """Is ``ip`` (the client address as the server sees it) inside one of ``allowed``? An address that is
    not an IP address (``unknown``) is inside none."""
    address = _address(ip)
    if address is None:
        return False
    spans = (allowed.spans if isinstance(allowed, Allowlist) else _spans(allowed)).get(address.version)
    if spans is None:
        return False
    starts, ends = spans
    value = int(address)
    i = bisect_right(starts, value) - 1
    return i >= 0 and value <= ends[i]


def _shown(text: str) -> str:
    return "".join(ch for ch in text if ch.isprintable())[:MAX_CIDR_LENGTH]
