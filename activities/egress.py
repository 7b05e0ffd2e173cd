"""Outbound HTTP to URLs that API callers give us (webhooks): only to where it may go.

A campaign author chooses the webhook URL, and the worker POSTs to it from inside our network.
Without a guard that is a server-side request forgery: `http://169.254.169.254/…` (cloud
metadata), `http://127.0.0.1:9465/metrics`, the database's port. The rule: a destination must be a
*global* unicast address (Python's `ipaddress.is_global`, after the IANA special-purpose
registries, RFC 6890) unless private destinations are allowed by a setting — for a local
receiver in development and tests.

Checked twice, because DNS can change between the two: at `PUT` (URL literals and names that are
local by definition: `localhost`, `*.localhost` per RFC 6761 §6.3) and at send time, where the host
name is resolved once, every address checked, and the connection made to the checked address
(the `Host` header and TLS SNI still name the host, so certificates are verified against it).
Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import httpx


class DestinationRefused(ValueError):
    """The URL's host is, or resolves to, an address webhooks may not reach; the message says
    which and why."""


NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
"""RFC 6052's well-known NAT64 prefix: the last 32 bits are the IPv4 address it reaches."""
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")
"""RFC 8215's local-use NAT64 prefix: mapped by the site's own translator, however it likes."""


def _refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address):
        return _refusal_v6(address)
    if address.is_global and not address.is_multicast:
        return None
    return _kind(address)


def _refusal_v6(address: ipaddress.IPv6Address) -> str | None:
    """IPv6 addresses that stand for an IPv4 one are judged by it: IPv4-mapped (`::ffff:a.b.c.d`),
    well-known NAT64 (RFC 6052, `64:ff9b::a.b.c.d`: a NAT64 gateway on the path connects to
    `a.b.c.d`, so `64:ff9b::10.0.0.7` is the private 10.0.0.7; that of a public address is
    allowed, it is how IPv6-only networks reach IPv4 hosts) and 6to4 (`2002:AABB:CCDD::/48`).
    Local-use NAT64 (RFC 8215) is refused whatever it embeds: its mapping is the site's own.
    Python's `is_global` calls all of these global; it also does IPv4-compatible `::a.b.c.d`
    (deprecated, RFC 4291 §2.5.5.1) and other reserved space, refused here too."""
    embedded: ipaddress.IPv4Address | None = address.ipv4_mapped
    if embedded is None and address in NAT64_WELL_KNOWN:
        embedded = ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    if embedded is None:
        embedded = address.sixtofour
    if embedded is not None:
        reason = _refusal(embedded)
        return None if reason is None else f"{address} stands for {embedded}: {reason}"
    if address in NAT64_LOCAL_USE:
        return f"{address} is a local-use NAT64 address (RFC 8215)"
    if not address.is_global or address.is_multicast:
        return _kind(address)
    if address.is_reserved:
        return f"{address} is a reserved address"
    return None


def _kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Why `address` (not global, or multicast) is refused, by its first special kind."""
    for kind in ("loopback", "link_local", "private", "multicast", "reserved", "unspecified"):
        if getattr(address, f"is_{kind}"):
            return f"{address} is a {kind.replace('_', '-')} address"
    return f"{address} is not a global address"


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuses (`DestinationRefused`) a URL whose host is a non-global IP literal or a name that
    is local by definition, unless `allow_private`. Names are resolved at send time instead."""
    if allow_private:
        return
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        raise DestinationRefused(f"{host} is a loopback name (RFC 6761)")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    reason = _refusal(address)
    if reason is not None:
        raise DestinationRefused(reason)


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def post(
    url: str,
    *,
    content: bytes,
    headers: Mapping[str, str],
    timeout_seconds: float,
    allow_private: bool,
) -> httpx.Response:
    """POSTs `content` to `url`, connecting only to a checked address; never follows redirects.

    Raises `DestinationRefused` for a forbidden destination (retrying will not help),
    `httpx.HTTPError` for network failures, `OSError` (`socket.gaierror`) when the name does not
    resolve.
    """
    check_url(url, allow_private=allow_private)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    extensions: dict[str, str] = {}
    target = url
    if not allow_private:
        addresses = await _resolve(host, port)
        for resolved in addresses:
            reason = _refusal(ipaddress.ip_address(resolved))
            if reason is not None:
                raise DestinationRefused(f"{host} resolves to {reason}")
        pinned = addresses[0]
        netloc = f"[{pinned}]" if ":" in pinned else pinned
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
        target = urlunsplit(parts._replace(netloc=netloc))
        headers = {**headers, "Host": parts.netloc.rpartition("@")[2]}
        if parts.scheme == "https":
            extensions["sni_hostname"] = host
    async with httpx.AsyncClient(timeout=timeout_seconds, follow_redirects=False) as http:
        return await http.post(target, content=content, headers=headers, extensions=extensions)
