"""Checks on a webhook subscriber URL: the eIM makes HTTP requests to it, and whoever may create a subscription
chooses it, so it is attacker-influenced input (server-side request forgery toward the eIM's own network, the
cloud metadata service...).

============================================  ===================================================================
URL                                           answer
============================================  ===================================================================
not ``https://`` (``http://``)                refused, except to a loopback host when ``[events] allow_loopback``
user info (``https://u:p@host``), fragment,   refused
no host, a port out of range, white space or
control characters, over 2048 characters
host: link-local (169.254/16 - the metadata   refused, always (``eim.smdp_addresses.address_class``: "never");
service), unspecified, multicast; a known     IPv4-mapped IPv6 literals are judged by their IPv4 address
metadata host name
host: loopback (127/8, ::1, ``localhost``)    only with ``[events] allow_loopback`` (a lab)
host: other non-global IP literal (RFC 1918)  only with ``[events] allow_private``
anything else (a public host name or IP)      allowed
============================================  ===================================================================

A host name that resolves to a refused address is caught at delivery time (:func:`refusal_for_addresses`, the
deliverer resolves before it connects). Pure functions, no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from eim.smdp_addresses import address_class, ip_of

MAX_URL = 2048
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data"})


class WebhookUrlError(ValueError):
    """The URL cannot be a webhook target; ``reason`` says why (never echoes more than 80 characters of it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class UrlPolicy:
    allow_loopback: bool = False  # http:// or https:// to 127.0.0.0/8, ::1, localhost (labs, tests)
    allow_private: bool = False  # RFC 1918 and other non-global IP literals


def host_class(host: str) -> str | None:
    """``address_class`` of a bare host (IPv6 without brackets too); IPv4-mapped IPv6 by its IPv4 address."""
    host = host.lower().rstrip(".")
    if host in METADATA_HOSTS:
        return "never"
    ip = ip_of(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        host = str(ip.ipv4_mapped)
    return address_class(f"{host}:443")  # the helper splits a port off the last colon


def check_url(url: str, policy: UrlPolicy = UrlPolicy()) -> str:
    """The URL if it may be a webhook target, else :class:`WebhookUrlError`."""
    if not isinstance(url, str) or not url:
        raise WebhookUrlError("must be an https:// URL")
    if len(url) > MAX_URL:
        raise WebhookUrlError(f"longer than {MAX_URL} characters")
    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        raise WebhookUrlError("must be ASCII without white space or control characters (IDNA-encode host names)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlError(f"not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise WebhookUrlError("must be an https:// URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise WebhookUrlError("must not carry user info (user:password@): put credentials in the signature secret")
    if parts.fragment or url.endswith("#"):
        raise WebhookUrlError("must not have a fragment (#...)")
    host = parts.hostname
    if not host:
        raise WebhookUrlError("has no host")
    if port == 0:
        raise WebhookUrlError("port 0 is not a port")
    kind = host_class(host)
    if kind == "never":
        raise WebhookUrlError(f"{host[:80]} is a link-local, metadata, unspecified or multicast address")
    if kind == "loopback" and not policy.allow_loopback:
        raise WebhookUrlError(f"{host[:80]} is a loopback address (allowed only with [events] allow_loopback)")
    if kind == "private" and not policy.allow_private:
        raise WebhookUrlError(
            f"{host[:80]} is a private or reserved address (allowed only with [events] allow_private)"
        )
    if scheme == "http" and not (kind == "loopback" and policy.allow_loopback):
        raise WebhookUrlError("must be an https:// URL (http:// only to loopback with [events] allow_loopback)")
    return url


def refusal_for_addresses(addresses: list[str], policy: UrlPolicy) -> str | None:
    """Why a host that resolved to ``addresses`` must not be contacted (DNS pointing inside), or ``None``."""
    for a in addresses:
        kind = host_class(a)
        if kind == "never":
            return f"resolves to {a}: link-local, unspecified or multicast"
        if kind == "loopback" and not policy.allow_loopback:
            return f"resolves to {a}: loopback"
        if kind == "private" and not policy.allow_private:
            return f"resolves to {a}: a private or reserved address"
    return None
