"""Device authentication policy for ESipa: which requests are served when the binding authenticated nobody.

SGP.32 v1.2 §6.1 leaves the authentication of the IPA to the transport (HTTPS, DTLS, the MQTT broker). Each
binding says what it authenticated in :class:`eim.interfaces.RequestContext`: ``eid_hint`` is set **if and
only if** the device proved it is that EID (``auth`` names how). What each binding can prove:

=====================  ===================================================  =========================
binding                identity                                             ``auth``
=====================  ===================================================  =========================
MQTT                   topic ``esipa/{EID}/up`` under the broker's ACL      ``mqtt-acl``
CoAPS (DTLS PSK)       PSK identity = EID (``[coap] psk_file``)             ``psk``
HTTPS + client cert    subject serialNumber = EID, from ``[devices]         ``mtls``
                       client_ca`` (:func:`eid_from_client_certificate`)
HTTP(S) + secret       ``Authorization: Bearer <EID>.<secret>``             ``device-secret``
                       (``[devices] secret_file``, ``eim device-secret``)
plain HTTP, plain      nothing                                              ``none``
CoAP, no credentials
=====================  ===================================================  =========================

This module is the one place that decides about the unauthenticated ones (:meth:`DevicePolicy.admits`),
called by the dispatcher before it decodes the message:

==================================================  ==================================================
request                                             answer
==================================================  ==================================================
authenticated (``eid_hint`` set)                    served; a message about another eUICC gets the
                                                    function's own answer (``invalidEid`` (3) for
                                                    GetEimPackage / ProvideEimPackageResult,
                                                    ``invalidEimTransactionId`` / ``invalidTransactionId``
                                                    for the download functions)
unauthenticated, peer address in                    served (labs, the demo, an IPA on the same host);
``[devices] trusted_networks`` (default loopback:   ``127.0.0.2`` is loopback too, narrow the list to
``127.0.0.0/8``, ``::1``)                           ``127.0.0.1/32`` to exclude it
unauthenticated, ``allow_unauthenticated = true``   served from any address (``eim serve`` warns once)
unauthenticated otherwise (or peer unknown)         refused, before decoding; nothing is read or written
                                                    in the store (no last contact, no binding change,
                                                    no package handed out: no activation code leaks):
  BF4F GetEimPackage                                  ``eimPackageError undefinedError`` (127)
  BF50 ProvideEimPackageResult                        ``provideEimPackageResultError undefinedError`` (127)
  BF39 InitiateAuthentication                         ``initiateAuthenticationErrorEsipa undefinedError``
                                                      (127)
  BF3B AuthenticateClient                             ``authenticateClientErrorEsipa undefinedError`` (127)
  BF3A GetBoundProfilePackage                         ``getBoundProfilePackageErrorEsipa undefinedError``
                                                      (127)
  BF41 CancelSession                                  ``cancelSessionError undefinedError`` (127)
  BF3D HandleNotification, BF4E TransferEimPackage    :class:`EsipaRejected` (403): no error answer exists
                                                      (HTTP 403, CoAP 4.03)
==================================================  ==================================================

SGP.32 has no "not authorised" code; ``undefinedError`` is the one answer that says nothing about the EID
(registered or not), so a refused request cannot be used to enumerate eUICCs.

A request that *presents* credentials that do not verify (wrong secret, a certificate without an EID) never
reaches the dispatcher: the HTTP binding answers 401/403 itself (:mod:`eim.bindings.http`); a client
certificate from a CA other than ``client_ca`` fails the TLS handshake.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from cryptography import x509
from cryptography.x509.oid import NameOID

from eim.esipa import codec
from eim.interfaces import EsipaRejected, RequestContext

DEFAULT_TRUSTED_NETWORKS = ("127.0.0.0/8", "::1/128")

_EID = re.compile(r"[0-9]{32}")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class DeviceAuthError(ValueError):
    """A credential that does not authenticate a device; the message says why (never repeats a secret)."""


def parse_networks(entries: Iterable[str], key: str = "[devices] trusted_networks") -> tuple[IpNetwork, ...]:
    """``["127.0.0.0/8", "::1"]`` to networks; a bare address is a /32 or /128. Raises ``ValueError`` naming
    ``key`` and the entry."""
    out: list[IpNetwork] = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{key}: {entry[:60]!r} is not an IP network (e.g. 127.0.0.0/8, ::1/128)") from None
    return tuple(out)


def peer_address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address of a peer as a socket gives it (``"::ffff:10.0.0.1"`` is ``10.0.0.1``, a scope id is
    dropped); ``None`` for anything that is not an address."""
    if not text:
        return None
    try:
        addr = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class DevicePolicy:
    """``[devices]``: serve unauthenticated devices only from ``trusted_networks``, or from anywhere with
    ``allow_unauthenticated``. An authenticated request is always admitted (its EID is checked by the function
    that reads the message)."""

    def __init__(
        self, *, allow_unauthenticated: bool = False, trusted_networks: Iterable[str] = DEFAULT_TRUSTED_NETWORKS
    ) -> None:
        self.allow_unauthenticated = allow_unauthenticated
        self.trusted_networks = parse_networks(trusted_networks)
        self._seen: dict[str, bool] = {}

    def peer_trusted(self, peer_ip: str | None) -> bool:
        if peer_ip is None:
            return False
        # a bounded memo (parsing an address costs more than the rest of a poll's check): its three lines only
        # save work, the answer is computed the same without them
        known = self._seen.get(peer_ip)  # pragma: no mutate
        if known is None:
            addr = peer_address(peer_ip)
            known = addr is not None and any(addr.version == n.version and addr in n for n in self.trusted_networks)
            if len(self._seen) >= 4096:  # pragma: no mutate
                self._seen.clear()
            self._seen[peer_ip] = known  # pragma: no mutate
        return known

    def admits(self, ctx: RequestContext) -> bool:
        if ctx.eid_hint is not None:
            return True
        return self.allow_unauthenticated or self.peer_trusted(ctx.peer_ip)


def refusal(tag: int, *, esipa_answer: bool = True) -> bytes:
    """The answer to a refused unauthenticated request of function ``tag`` (table above); raises
    :class:`EsipaRejected` (403) for the functions that have no error answer, and for every function when
    ``esipa_answer`` is false (an SGP.32 v1.0 request: a v1.0 IPA takes any BF50 for success)."""
    answer = codec.undefined_error(tag) if esipa_answer else None
    if answer is not None:
        return answer
    raise EsipaRejected(403, "device not authenticated: use a client certificate, a device secret, CoAPS or MQTT")


def eid_from_client_certificate(der: bytes) -> str:
    """The EID a device TLS client certificate is issued for: its subject's ``serialNumber`` attribute
    (OID 2.5.4.5), exactly one, 32 decimal digits. This is where SGP.22 puts the EID in the eUICC certificate,
    and where ``rsp pki device-cert --eid`` writes it. The certificate must already be verified (by the TLS
    handshake) against ``[devices] client_ca``; this only reads the name. Raises :class:`DeviceAuthError`."""
    try:
        cert = x509.load_der_x509_certificate(bytes(der))
        attrs = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    except (ValueError, TypeError) as exc:
        raise DeviceAuthError(f"client certificate does not parse: {str(exc)[:80]}") from None
    if len(attrs) != 1:
        raise DeviceAuthError(
            f"client certificate subject has {len(attrs)} serialNumber attributes, needs one (the EID)"
        )
    value = attrs[0].value
    if not isinstance(value, str) or not _EID.fullmatch(value):
        raise DeviceAuthError("client certificate subject serialNumber is not an EID (32 decimal digits)")
    return value
