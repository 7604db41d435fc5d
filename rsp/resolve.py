"""Lab address mapping for ES9+ clients, like curl's ``--resolve``: which address to connect to for an SM-DP+ name.

A map is written ``{"host[:port]": "address:port"}``: a request for ``https://smdp.test`` (port 443) or
``https://smdp.test:8443`` goes to ``127.0.0.1:9443`` with ``{"smdp.test": "127.0.0.1:9443"}``; a key with a port
only maps that port, and wins over the key without one. Only the TCP connection changes: TLS still sends the
original name (SNI) and checks the server's certificate against it, so a lab SM-DP+ needs a certificate for the
name it is reached by. Names are compared without case. Pure parsing, no I/O: the ES9+ clients apply it.

:func:`parse` checks every entry and raises :class:`ResolveMapError` naming the key that is wrong.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOST = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
MAX_ENTRIES = 256


class ResolveMapError(ValueError):
    """An entry of a resolution map that cannot be used; the message names the key."""


@dataclass(frozen=True)
class ResolveMap:
    """``(host, port or None) -> (address, port)``; empty = connect to the names themselves."""

    entries: Mapping[tuple[str, int | None], tuple[str, int]] = field(default_factory=dict)

    def lookup(self, host: str, port: int) -> tuple[str, int] | None:
        """Where to connect for ``host``:``port``, or ``None`` (no mapping: the name itself)."""
        name = host.lower().rstrip(".")
        return self.entries.get((name, port)) or self.entries.get((name, None))

    def __bool__(self) -> bool:
        return bool(self.entries)


def _port(text: str, where: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536 or len(text) > 5:
        raise ResolveMapError(f"{where}: port must be 1..65535, got {text!r}")
    return int(text)


def _key(key: object) -> tuple[str, int | None]:
    if not isinstance(key, str) or not key or len(key) > 260:
        raise ResolveMapError(f"{key!r}: the key must be a host name with an optional :port")
    host, sep, port = key.partition(":")
    if not _HOST.match(host) or len(host) > 253:
        raise ResolveMapError(f"{key!r}: {host!r} is not a host name")
    return host.lower(), (_port(port, repr(key)) if sep else None)


def _target(key: str, value: object) -> tuple[str, int]:
    where = repr(key)
    if not isinstance(value, str) or not value:
        raise ResolveMapError(f"{where}: the value must be a string address:port, got {value!r}")
    if value.startswith("["):  # [IPv6]:port
        inner, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ResolveMapError(f"{where}: {value!r} must be [IPv6 address]:port")
        try:
            address = str(ipaddress.IPv6Address(inner))
        except ValueError:
            raise ResolveMapError(f"{where}: {inner!r} is not an IPv6 address") from None
        return address, _port(rest[1:], where)
    address, sep, port = value.rpartition(":")
    if not sep or not address:
        raise ResolveMapError(f"{where}: {value!r} must be address:port (the port is required)")
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        if not _HOST.match(address) or len(address) > 253 or address.replace(".", "").isdigit():
            raise ResolveMapError(f"{where}: {address!r} is not an IPv4 address or host name") from None
    return address.lower(), _port(port, where)


def parse(mapping: object) -> ResolveMap:
    """A :class:`ResolveMap` from ``{"host[:port]": "address:port"}`` (a TOML table), or from the text form
    ``"host[:port]=address:port,..."`` (environment variables). Raises :class:`ResolveMapError` naming the key."""
    if isinstance(mapping, str):
        mapping = parse_text(mapping)
    if mapping is None:
        return ResolveMap()
    if not isinstance(mapping, Mapping):
        raise ResolveMapError("must be a table of host[:port] = address:port")
    if len(mapping) > MAX_ENTRIES:
        raise ResolveMapError(f"at most {MAX_ENTRIES} entries")
    entries: dict[tuple[str, int | None], tuple[str, int]] = {}
    for key, value in mapping.items():
        name = _key(key)
        if name in entries:
            raise ResolveMapError(f"{key!r}: the same name is mapped twice")
        entries[name] = _target(key, value)
    return ResolveMap(entries)


def parse_text(text: str) -> dict[str, str]:
    """``"a.test=127.0.0.1:8443, b.test:443=[::1]:9443"`` -> a dict (the form of environment variables)."""
    out: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ResolveMapError(f"{item!r}: each entry is host[:port]=address:port")
        if key.strip() in out:
            raise ResolveMapError(f"{key.strip()!r}: the same name is mapped twice")
        out[key.strip()] = value.strip()
    return out
