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


def _refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _refusal(address.ipv4_mapped)
    if address.is_global and not address.is_multicast:
        return None
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
