"""Which SM-DP+ addresses the eIM may contact (SGP.22 v2.5 §4.1 / §6.5: an SM-DP+ address is an FQDN, optionally
with a port; SGP.32 v1.2 §3.2.3 indirect download and §5.14.4 ESipa.HandleNotification: the eIM calls ES9+ at
addresses that reach it from operators, activation codes and eUICC notifications).

The eIM is an HTTP client toward whatever address it is handed, so every address is checked before a connection:

==============================================  ===============================================================
address (host part)                             answer
==============================================  ===============================================================
IP literal: link-local (169.254/16, e.g. the    refused, always (cloud metadata services live there), even when
cloud metadata service), unspecified (0.0.0.0), listed in ``allowed_smdp_addresses``
multicast, broadcast
IP literal or ``localhost``: loopback           allowed when ``allow_loopback`` (a lab eIM that itself listens
(127/8, ``localhost``, ``*.localhost``)         only on loopback) or ``allow_private`` or listed; else refused
IP literal: any other non-global address        allowed when ``allow_private`` or listed; else refused
(RFC 1918, CGNAT 100.64/10, reserved ranges)
anything else (a host name, a public IP)        no objection here (the callers decide whether it is allowed)
==============================================  ===============================================================

IP literals are read the way the system resolver reads them (``inet_aton``): ``2130706433``, ``127.1`` and
``0x7f.0.0.1`` are all 127.0.0.1 and are treated as such. A host name that merely resolves to a private address is
not caught here: that is why notifications only go to addresses the operator chose (see ``eim.relay.outbox``).
Pure functions, no I/O.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection
from dataclasses import dataclass, field


def host_of(address: str) -> str:
    """The host part of ``host[:port]`` (lower case)."""
    # pragma below: partition would be the same; an SM-DP+ address has at most one colon (check_address)
    host = address.rpartition(":")[0] if ":" in address else address  # pragma: no mutate
    return host.lower()


def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a host string denotes literally (including the legacy IPv4 forms ``inet_aton`` accepts)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def address_class(address: str) -> str | None:
    """``"never"`` (link-local, unspecified, multicast, broadcast), ``"loopback"``, ``"private"`` (any other
    non-global IP literal), or ``None`` (a host name or a global IP)."""
    host = host_of(address)
    if host == "localhost" or host.endswith(".localhost"):
        return "loopback"
    ip = ip_of(host)
    if ip is None:
        return None
    if ip.is_link_local or ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
        return "never"
    if ip.is_loopback:
        return "loopback"
    if not ip.is_global:
        return "private"
    return None


@dataclass(frozen=True)
class SmdpAddressPolicy:
    """``allowed``: the operator's ``[relay] allowed_smdp_addresses`` (compared case-insensitively);
    ``allow_private``: ``[relay] allow_private_addresses``; ``allow_loopback``: loopback SM-DP+s are fine (set when
    the eIM itself listens on loopback only: a lab)."""

    allowed: frozenset[str] = field(default_factory=frozenset)
    allow_private: bool = False
    allow_loopback: bool = False

    @classmethod
    def of(
        cls, allowed: Collection[str] = (), *, allow_private: bool = False, allow_loopback: bool = False
    ) -> SmdpAddressPolicy:
        return cls(frozenset(a.lower() for a in allowed), allow_private, allow_loopback)

    def listed(self, address: str) -> bool:
        return address.lower() in self.allowed

    def refusal(self, address: str) -> str | None:
        """Why ``address`` must never be contacted, or ``None`` (see the module table)."""
        kind = address_class(address)
        if kind is None:
            return None
        if kind == "never":
            return f"{address} is a link-local, unspecified or multicast address: never an SM-DP+"
        if self.allow_private or self.listed(address):
            return None
        if kind == "loopback":
            if self.allow_loopback:
                return None
            return f"{address} is a loopback address (allowed only with [relay] allow_private_addresses)"
        return f"{address} is a private or reserved IP address (allowed only with [relay] allow_private_addresses)"


def loopback_only(hosts: Collection[str]) -> bool:
    """True when every listening host given is a loopback address or name (a lab eIM)."""

    def loopback(host: str) -> bool:
        host = host.strip("[]").lower()
        ip = ip_of(host)
        return host == "localhost" or (ip is not None and ip.is_loopback)

    return bool(hosts) and all(loopback(h) for h in hosts)
