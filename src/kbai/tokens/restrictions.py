"""Per-token restrictions that verification enforces: the IP allowlist, and the description's rules.

An allowlist is a list of CIDR strings (IPv4 and IPv6, at most :data:`MAX_ALLOWED_IPS`), normalised
when saved (``10.1.2.3/24`` is kept as ``10.1.2.0/24``, a bare address as a /32 or /128), parsed once
when a token's record is loaded, and kept in the cached record: checking an address on a warm
request is arithmetic, no I/O. An IPv4 address that arrives IPv4-mapped (``::ffff:10.1.2.3``, from a
dual-stack socket) is judged as the IPv4 address it is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from kbai import errors
from kbai.errors import KbaiError
from kbai.validate import clean_text

MAX_ALLOWED_IPS = 50
MAX_CIDR_LENGTH = 50
MAX_DESCRIPTION = 500

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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


@lru_cache(maxsize=4096)
def networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


@lru_cache(maxsize=16384)
def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def ip_allowed(allowed: Iterable[Network], ip: str) -> bool:
    """Is ``ip`` (the client address as the server sees it) inside one of ``allowed``? An address that is
    not an IP address (``unknown``) is inside none."""
    address = _address(ip)
    if address is None:
        return False
    return any(address.version == n.version and address in n for n in allowed)


def _shown(text: str) -> str:
    return "".join(ch for ch in text if ch.isprintable())[:MAX_CIDR_LENGTH]
