"""Outbound HTTP to addresses a tenant chose: the SSRF guard, connecting only to what it checked, one hard deadline.

A webhook URL comes from a tenant admin, so without care kbai's worker would POST wherever they say:
the cloud metadata service (``169.254.169.254``), Redis on ``localhost:6379``, PostgreSQL on
``[::1]:5432``, an internal admin page. :class:`Guard` decides, for every address a host name
resolves to, whether kbai may connect to it. Only public unicast addresses pass: loopback, private
(RFC 1918), link-local (cloud metadata lives there), carrier-grade NAT (``100.64.0.0/10``),
unique-local IPv6 (``fc00::/7``), reserved, documentation, benchmarking, ``0.0.0.0``/``::`` and
multicast are refused, and so is an IPv6 address that embeds a refused IPv4 one (IPv4-mapped
``::ffff:127.0.0.1``, 6to4, NAT64). Cloud metadata host names are refused by name before any lookup.
The operator may allow internal receivers with ``KBAI_WEBHOOK_ALLOWED_NETWORKS`` (never ``0.0.0.0``
or multicast).

The check must be about the address actually used, or a host name that answers "public" to the
check and "127.0.0.1" a moment later (DNS rebinding) would get through. :func:`post` therefore
speaks HTTP through httpcore with a network backend of its own: asked to connect to the URL's
host, it resolves that host once, checks every address, and connects to one of exactly those
addresses. The URL keeps its host name, so the ``Host`` header, TLS SNI and the certificate check
all still name it. Redirects are never followed (a 3xx is an answer, not a 2xx).

Every timeout here is derived from one deadline for the whole call (DNS lookup, connect, TLS, each
write and each read): a receiver that trickles one byte every few seconds is cut off when the
deadline passes, not when some per-read timeout finally notices.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

# Looked up by these names, a cloud's instance metadata (credentials included) answers.
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.com",
        "metadata.platformequinix.com",
    }
)
# Special-purpose ranges Python's ipaddress still calls global (or that need a clearer reason).
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_IETF_PROTOCOL = ipaddress.ip_network("192.0.0.0/24")  # includes Oracle Cloud's metadata at 192.0.0.192
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


class Refused(Exception):
    """kbai will not connect there. ``reason`` completes "webhook_url is refused: ..." and holds no URL path."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unresolvable(Exception):
    """The host name has no address (or the lookup failed)."""


class DeadlineExceeded(Exception):
    """The call's deadline passed before it finished."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def classify(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address (a phrase such as "a loopback address"), or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            reason = classify(inner)
            return f"an IPv6 address embedding {reason}" if reason else None
    if ip.is_unspecified:
        return "the unspecified address (0.0.0.0 or ::), which reaches this host"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (where cloud metadata services answer)"
    if ip.is_multicast:
        return "a multicast address"
    if ip in _CGNAT:
        return "a carrier-grade NAT address (100.64.0.0/10)"
    if ip in _UNIQUE_LOCAL:
        return "a unique-local IPv6 address (fc00::/7)"
    if ip in _IETF_PROTOCOL:
        return "an IETF protocol address (192.0.0.0/24, where some cloud metadata services answer)"
    if isinstance(ip, ipaddress.IPv4Address) and any(ip in net for net in _RFC1918):
        return "a private network address"
    if ip.is_reserved or ip.is_private or not ip.is_global:
        return "a reserved or special-purpose address"
    return None


def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for TCP, in the resolver's order, without repeats."""
    out: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = str(sockaddr[0]).split("%", 1)[0]
        if address not in out:
            out.append(address)
    return out


class Guard:
    """Where outbound calls may go. ``allowed``: the operator's networks (``KBAI_WEBHOOK_ALLOWED_NETWORKS``);
    ``resolve``: host name -> addresses (the system resolver unless a test injects one, like the clock)."""

    def __init__(self, allowed: Iterable[IPNetwork] = (), resolve: Resolver = system_resolve) -> None:
        self.allowed = tuple(allowed)
        self.resolve = resolve

    @classmethod
    def from_setting(cls, value: str, resolve: Resolver = system_resolve) -> Guard:
        nets = [ipaddress.ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip()]
        return cls(nets, resolve)

    def refusal(self, ip: IPAddress) -> str | None:
        """Why kbai may not connect to ``ip``, or None."""
        reason = classify(ip)
        if reason is None:
            return None
        if ip.is_unspecified or ip.is_multicast:
            return reason  # never a receiver, whatever the allowlist says
        if any(ip.version == net.version and ip in net for net in self.allowed):
            return None
        return reason

    def addresses(self, host: str, port: int, timeout: float) -> list[str]:
        """Resolve ``host`` once and return its addresses, all of which may be connected to; raises
        :class:`Refused` when any may not (a name with one bad address is not trusted with the others),
        :class:`Unresolvable` or :class:`DeadlineExceeded`."""
        name = host.strip().rstrip(".").lower()
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]
        if name in METADATA_HOSTS:
            raise Refused("it names a cloud metadata service")
        literal = _literal(name)
        found = [str(literal)] if literal is not None else _within(self.resolve, name, port, timeout)
        if not found:
            raise Unresolvable(host)
        for text in found:
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                raise Unresolvable(host) from None
            reason = self.refusal(ip)
            if reason is not None:
                raise Refused(f"its address is {reason}" if literal is not None else f"its host resolves to {reason}")
        return found

    def check_url(self, url: str, timeout: float) -> None:
        """The check at save time: raises :class:`Refused` for a URL kbai would never send to. A host that does
        not resolve (yet) passes: nothing is sent to it until it does, and then it is checked again."""
        parts = urlsplit(url)
        with contextlib.suppress(Unresolvable, DeadlineExceeded):
            self.addresses(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80), timeout)


def _literal(name: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return None


def _within(resolve: Resolver, host: str, port: int, timeout: float) -> list[str]:
    """``resolve(host, port)`` bounded by ``timeout`` (getaddrinfo itself takes none)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["found"] = list(resolve(host, port))
        except (OSError, UnicodeError) as exc:
            box["error"] = exc

    if timeout <= 0:
        raise DeadlineExceeded("DNS lookup")
    worker = threading.Thread(target=run, name="kbai-dns", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise DeadlineExceeded("DNS lookup")
    if "error" in box:
        raise Unresolvable(host)
    return list(box.get("found", []))


# ---- HTTP through the guard -------------------------------------------------------------------------
class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self, timeout: float | None = None) -> float:
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise httpcore.ReadTimeout("deadline")
        return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write gets only the time left before the deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self.inner = inner
        self.deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, self.deadline.left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, self.deadline.left(timeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self.inner.start_tls(ssl_context, server_hostname, self.deadline.left(timeout)), self.deadline
        )

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class _PinnedBackend(httpcore.SyncBackend):
    """Connects to the URL's host only through :meth:`Guard.addresses`: resolved once, checked, then
    connected to one of exactly the checked addresses."""

    def __init__(self, guard: Guard, deadline: _Deadline) -> None:
        self.guard = guard
        self.deadline = deadline
        self.connected_to: str | None = None

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self.guard.addresses(host, port, self.deadline.left(timeout))
        failure: Exception | None = None
        for address in addresses:
            try:
                stream = super().connect_tcp(address, port, self.deadline.left(timeout), local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            self.connected_to = address
            return _DeadlineStream(stream, self.deadline)
        assert failure is not None
        raise failure


def post(
    url: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    *,
    guard: Guard,
    deadline_seconds: float,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """POST ``body`` to ``url`` through ``guard`` within ``deadline_seconds`` in all; returns the status code.

    Raises :class:`Refused`, :class:`Unresolvable`, :class:`DeadlineExceeded`, or ``httpcore.NetworkError``
    (connection refused or dropped). The answer's body is never read.
    """
    parsed = httpx.URL(url)  # IDNA and percent-encoding as httpx does them
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise Refused("only http:// and https:// URLs with a host are sent to")
    deadline = _Deadline(deadline_seconds)
    backend = _PinnedBackend(guard, deadline)
    target = httpcore.URL(scheme=parsed.raw_scheme, host=parsed.raw_host, port=parsed.port, target=parsed.raw_path)
    each = {"connect": deadline_seconds, "read": deadline_seconds, "write": deadline_seconds, "pool": deadline_seconds}
    try:
        with (
            httpcore.ConnectionPool(
                ssl_context=ssl_context or httpx.create_ssl_context(),
                network_backend=backend,
                max_connections=1,
                retries=0,
            ) as pool,
            pool.stream("POST", target, headers=list(headers), content=body, extensions={"timeout": each}) as response,
        ):
            return int(response.status)
    except httpcore.TimeoutException:
        raise DeadlineExceeded("HTTP request") from None
