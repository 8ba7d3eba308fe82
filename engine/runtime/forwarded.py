"""The client behind a reverse proxy: ``X-Forwarded-For``, believed only from trusted proxies.

Any client can write ``X-Forwarded-For``, so the server reads it only on a connection from an
address the operator named (``serve --trusted-proxy``). Each proxy appends the address it got
the request from, so the list is read from the right: addresses of trusted proxies are hops to
skip, and the first one that is not is the client — what a client wrote itself stays to the
left of it and is never used. A list with a malformed entry on that path is not believed at all
(the connection's address stands), nor is a header on a connection from anywhere else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from ..errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(entries: Iterable[str] | None) -> tuple[Network, ...]:
    """Addresses or networks (``10.0.0.5``, ``10.0.0.0/8``, ``::1``) of trusted proxies;
    ConfigError names a malformed one."""
    if isinstance(entries, str):  # one address or network (its characters were taken one by one)
        entries = [entries]
    if entries is not None and not isinstance(entries, Iterable):
        raise ConfigError(f"trusted proxies are a list of IP addresses or networks, got {type(entries).__name__}")
    out = []
    for entry in entries or ():
        try:
            out.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise ConfigError(f"trusted proxy must be an IP address or network (e.g. 10.0.0.0/8), "
                              f"got {entry!r}") from None
    return tuple(out)


def trust_warning(networks: Sequence[Network]) -> str | None:
    """What trusting ``networks`` gives away, if one of them is every address (``0.0.0.0/0``,
    ``::/0``): any client can then name itself in ``X-Forwarded-For`` and so choose its
    rate-limit bucket and its address in the access log; None otherwise."""
    everyone = [str(net) for net in networks if net.prefixlen == 0]
    if not everyone:
        return None
    return (f"--trusted-proxy {', '.join(everyone)} trusts every address: any client can name itself in "
            "X-Forwarded-For and so escape --rate-limit and the access log's address (name the proxies' own "
            "addresses instead)")


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """One list entry as an address: bare, ``[v6]`` or ``[v6]:port``, or ``v4:port``; None if
    it is none of these."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # an IPv4 address with a port (some proxies add it)
        text = text.split(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address, networks: Sequence[Network]) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:10.0.0.5 on a dual-stack socket
    return any(address in net or (mapped is not None and mapped in net) for net in networks)


def plain_address(peer: str) -> str:
    """``peer`` as the log, the rate limits and the connection bound name it: an IPv4 client of a
    dual-stack socket (``::ffff:10.0.0.5``) as its IPv4 address, so that it is one client whether
    it came straight or through a proxy's ``X-Forwarded-For``; anything else unchanged."""
    address = _address(peer) if ":" in peer else None
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped) if mapped is not None else peer


def trusted_peer(peer: str, networks: Sequence[Network]) -> bool:
    """Whether a connection from ``peer`` comes from a trusted proxy (many clients behind it)."""
    address = _address(peer)
    return address is not None and _trusted(address, networks)


def client_address(peer: str, forwarded_for: Sequence[str], networks: Sequence[Network]) -> tuple[str, bool]:
    """(the client's address, whether it came from ``X-Forwarded-For``) for a connection from
    ``peer`` carrying these header values (every occurrence, in order); an IPv4-mapped address
    is given as IPv4 (``plain_address``)."""
    name = plain_address(peer)
    if not networks or not forwarded_for:
        return name, False
    peer_address = _address(peer)
    if peer_address is None or not _trusted(peer_address, networks):
        return name, False
    hops = [entry for value in forwarded_for for entry in value.split(",")]
    for entry in reversed(hops):
        address = _address(entry)
        if address is None:
            return name, False  # a list that does not parse is not believed
        if not _trusted(address, networks):
            return plain_address(str(address)), True
    return plain_address(str(address)), True  # every hop a trusted proxy: the farthest of them


def client_key(client: str | None, address: str) -> str:
    """Who a request comes from, for the rate limits and the refine workers' sharing: its
    token's name, else its address."""
    return f"client:{client}" if client else f"address:{address}"
