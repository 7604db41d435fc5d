"""Lab address mapping for ES9+ clients, like curl's ``--resolve``: which address to connect to for an SM-DP+ name.

A map is written ``{"host[:port]": "address:port"}``: a request for ``https://smdp.test`` (port 443) or
``https://smdp.test:8443`` goes to ``127.0.0.1:9443`` with ``{"smdp.test": "127.0.0.1:9443"}``; a key with a port
only maps that port, and wins over the key without one. Only the TCP connection changes: TLS still sends the
original name (SNI) and checks the server's certificate against it, so a lab SM-DP+ needs a certificate for the
name it is reached by. Names are compared without case.

:func:`parse` checks every entry and raises :class:`ResolveMapError` naming the key that is wrong (pure, no I/O).
:func:`mapped_transport` is the one adapter both ES9+ clients (the IPA's and the eIM relay's, which may not import
each other) use to apply a map to httpx; it imports httpx only when called.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOST = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
MAX_ENTRIES = 256

log = logging.getLogger("rsp.resolve")


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


def mapped_transport(resolve: ResolveMap, verify: ssl.SSLContext | bool, limits: Any = None) -> Any:
    """An httpx transport that connects to the address ``resolve`` maps a name to (:mod:`rsp.resolve`, like curl's
    ``--resolve``). The request keeps its URL, so TLS sends the original name (SNI) and checks the certificate
    against it; connections are pooled per original name, never shared between two names mapped to one address.
    Shared by the IPA's ES9+ client and the eIM's relay (which may not import each other); httpx and httpcore are
    imported here only, by the callers that have them."""
    import httpcore
    import httpx

    limits = limits or httpx.Limits()
    transport = httpx.AsyncHTTPTransport(verify=verify, limits=limits)
    context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify=verify)

    class MappedBackend(httpcore.AsyncNetworkBackend):
        def __init__(self) -> None:
            self.inner = httpcore.AnyIOBackend()

        async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):  # noqa: ASYNC109 (httpcore's signature)
            target = resolve.lookup(host, port)
            if target is not None:
                log.debug("mapped %s:%s to %s:%s", host, port, *target)
                host, port = target
            return await self.inner.connect_tcp(
                host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
            )

        async def connect_unix_socket(self, path, timeout=None, socket_options=None):  # noqa: ASYNC109
            return await self.inner.connect_unix_socket(path, timeout=timeout, socket_options=socket_options)

        async def sleep(self, seconds):
            await self.inner.sleep(seconds)

    # httpx builds its pool without a way to pass a network backend: replace it with one that has ours
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=MappedBackend(),
    )
    return transport
