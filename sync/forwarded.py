"""The client's address and scheme behind a trusted reverse proxy (TLS terminator).

Behind a proxy every request comes from the proxy's address, so per-address
limits (login guessing, refused devices) would lump every phone together, and
the device registry's record of refused attempts would name the proxy. When the
peer is one of the configured trusted proxies (``FIELDSYNC_TRUSTED_PROXIES``:
addresses or networks), the client is the right-most address of
``X-Forwarded-For`` that is not itself a trusted proxy, and ``X-Forwarded-Proto``
tells whether the client spoke HTTPS (cookies get ``Secure``). From any other
peer both headers are ignored: a phone cannot pick its own address. A malformed
header is ignored too (the peer address stays).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Sequence

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ProxyConfigError(ValueError):
    pass


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"127.0.0.1, 10.0.0.0/8"`` -> networks; a clear error for a bad entry."""
    found = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            found.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ProxyConfigError(
                f"trusted proxy {item!r} is not an IP address or network (e.g. 10.0.0.0/8)"
            ) from exc
    return tuple(found)


def _trusted(address: str | None, networks: Sequence[Network]) -> bool:
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(
    peer: str | None, forwarded_for: Iterable[str], networks: Sequence[Network]
) -> str | None:
    """The client's address, or None to keep the peer's (untrusted peer, bad header)."""
    if not _trusted(peer, networks):
        return None
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        try:
            ip = ipaddress.ip_address(hop)
        except ValueError:
            return None
        if not any(ip in net for net in networks):
            return str(ip)
    return None  # every hop is a proxy of ours: the peer address is as good as any


def scheme(request: web.Request, networks: Sequence[Network]) -> str:
    """The scheme the client spoke: a trusted proxy's ``X-Forwarded-Proto``, else our own."""
    if networks and _trusted(request.remote, networks):
        proto = request.headers.get("X-Forwarded-Proto", "").strip().lower()
        if proto in ("http", "https"):
            return proto
    return request.scheme


def middleware(networks: Sequence[Network]) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        if networks and _trusted(request.remote, networks):
            client = client_address(
                request.remote, request.headers.getall("X-Forwarded-For", []), networks
            )
            spoken = scheme(request, networks)
            if client is not None:
                request = request.clone(remote=client, scheme=spoken)
            elif spoken != request.scheme:
                request = request.clone(scheme=spoken)
        return await handler(request)

    return forwarded
