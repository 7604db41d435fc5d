"""Verification of an eUICC notification before the eIM takes it for an SM-DP+ (SGP.22 v2.5 §3.5 "Notifications",
§5.7.10 ES10b.RetrieveNotificationsList for the ASN.1 of ``PendingNotification``, §5.6.4 ES9+.HandleNotification;
SGP.32 v1.2 ESipa.HandleNotification and ``ePRAndNotifications``, which carry the same ``PendingNotification``).

What the eUICC signs (SGP.22 v2.5 ASN.1, ``RSPDefinitions``; the lab SM-DP+ ``smdpp.es9plus.handle_notification``
and pySim's es9p check the same bytes):

* ``OtherSignedNotification ::= SEQUENCE { tbsOtherNotification NotificationMetadata (BF2F),
  euiccNotificationSignature [APPLICATION 55] OCTET STRING (5F37), euiccCertificate Certificate (30),
  eumCertificate Certificate (30) }``: the signature is the eUICC's TR-03111 ``r||s`` over the ``BF2F`` TLV
  exactly as received; the two certificates travel with it (CERT.EUICC.ECDSA signed by the EUM, CERT.EUM.ECDSA
  signed by a CI). (SGP.22 v3 renames the last member ``nextCertInChain`` and adds ``otherCertsInChain [1]``:
  not accepted here.)
* ``ProfileInstallationResult ::= [55] SEQUENCE { profileInstallationResultData [39] (BF27), euiccSignPIR
  (5F37) }``: ``euiccSignPIR`` covers the ``BF27`` TLV as received. A PIR carries no certificate: the eUICC's key
  is the one the eIM holds for the EID of the download it ends (learned in the eUICC data request or the
  relayed AuthenticateClient).
* ``NotificationMetadata ::= [47] SEQUENCE { seqNumber [0] INTEGER, profileManagementOperation [1]
  NotificationEvent, notificationAddress UTF8String (0C), iccid Iccid OPTIONAL }``.

Every check, in order, and the ``cause`` of :class:`NotificationRejected` it raises (also the metric label):

=================================================  ================================================
check                                              cause
=================================================  ================================================
one TLV, the PendingNotification shape above,      ``malformed``
metadata with seqNumber and a UTF-8 address
compact notification (``A0`` / ``A1``)             ``compact``
eUICC certificate chains to a trusted CI           ``certificate``
(``EuiccKeys``), its EID is readable
the certificate's EID is the EID the notification  ``eid_mismatch``
is attributed to
the signature verifies over the received bytes     ``signature``
=================================================  ================================================

Nothing here does I/O: the caller (``eim.esipa.results``) finds the EID and the stored certificate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from rsp import crypto, tlv
from rsp.errors import RspError

CAUSES = ("malformed", "compact", "certificate", "eid_mismatch", "signature")


class NotificationRejected(Exception):
    """A notification that is not taken: ``cause`` (one of :data:`CAUSES` or a caller's own, e.g.
    ``unattributed``) and ``reason`` (which check failed and why)."""

    def __init__(self, cause: str, reason: str) -> None:
        self.cause = cause
        self.reason = reason
        super().__init__(f"notification refused ({cause}): {reason}")


class KeyRing(Protocol):
    """``eim.packages.euicc_package.EuiccKeys``: the verified key of an eUICC certificate chained to a trusted CI
    (raises an exception with a ``reason`` when the chain or the EID does not hold)."""

    def public_key(
        self, eid: str, euicc_cert: bytes, eum_cert: bytes | None, ci_key_id: bytes | None = None
    ) -> Any: ...


@dataclass(frozen=True)
class NotificationParts:
    """A PendingNotification cut into its parts (all slices of the received bytes)."""

    raw: bytes  # the whole TLV (BF37 or 30), verbatim
    kind: str  # "pir" | "other"
    signed: bytes  # the TLV the signature covers (BF27 / BF2F)
    signature: bytes  # r||s
    seq_number: int
    address: str
    transaction_id: bytes | None  # PIR: the ES9+ transactionId of the download it ends
    euicc_certificate: bytes | None  # otherSignedNotification only
    eum_certificate: bytes | None
    event: str | None = None  # profileManagementOperation: install | enable | disable | delete (None: not one bit)
    iccid: str | None = None  # NotificationMetadata iccid (OPTIONAL)


@dataclass(frozen=True)
class VerifiedNotification:
    """A notification whose eUICC signature verified for ``eid``: the only thing the outbox takes."""

    raw: bytes
    kind: str
    eid: str
    seq_number: int
    address: str
    transaction_id: bytes | None = None
    event: str | None = None  # as in NotificationParts (what the fleet overview learns the enabled profile from)
    iccid: str | None = None


def _metadata(meta: tlv.Tlv) -> tuple[int, str]:
    fields: dict[int, tlv.Tlv] = {}
    for child in tlv.children(meta, what="NotificationMetadata"):
        if child.tag in fields:
            raise NotificationRejected("malformed", f"NotificationMetadata: tag {child.tag:X} twice")
        fields[child.tag] = child
    seq = fields.get(0x80)
    if seq is None or not 1 <= len(seq.value) <= 8:
        raise NotificationRejected("malformed", "NotificationMetadata: no seqNumber (80)")
    address = fields.get(0x0C)
    if address is None or not address.value:
        raise NotificationRejected("malformed", "NotificationMetadata: no notificationAddress (0C)")
    try:
        text = address.value.decode("utf-8")
    except UnicodeDecodeError:
        raise NotificationRejected("malformed", "NotificationMetadata: notificationAddress is not UTF-8") from None
    return int.from_bytes(seq.value, "big", signed=True), text


EVENTS = ("install", "enable", "disable", "delete")  # NotificationEvent BIT STRING, bits 0..3


def notification_event(bits: bytes) -> str | None:
    """The one event of a ``profileManagementOperation`` BIT STRING value (``unused-bits`` octet first), or None."""
    if len(bits) < 2:
        return None
    named = [EVENTS[i] for i in range(len(EVENTS)) if bits[1] & (0x80 >> i)]
    return named[0] if len(named) == 1 else None


def _profile_event(meta: tlv.Tlv) -> tuple[str | None, str | None]:
    """``profileManagementOperation`` (81) and ``iccid`` (5A) of a NotificationMetadata already checked by
    :func:`_metadata`; an unreadable ICCID or event is ``None`` (they inform the fleet overview only)."""
    from eim.packages.common import iccid_from_bytes

    fields = {c.tag: c for c in tlv.children(meta, what="NotificationMetadata")}
    event = notification_event(fields[0x81].value) if 0x81 in fields else None
    iccid = None
    if 0x5A in fields and len(fields[0x5A].value) == 10:
        try:
            iccid = iccid_from_bytes(fields[0x5A].value)
        except (RspError, ValueError):
            iccid = None
    return event, iccid


def parse(raw: bytes) -> NotificationParts:
    """Cut a PIR (``BF37``) or otherSignedNotification (``30``) into its parts; raises :class:`NotificationRejected`
    (``malformed`` / ``compact``)."""
    try:
        top = tlv.parse_exact(bytes(raw), what="PendingNotification")
        if top.tag in (0xA0, 0xA1):
            raise NotificationRejected("compact", "compact notifications cannot be verified or forwarded")
        parts = tlv.children(top, what="PendingNotification")
        tags = [p.tag for p in parts]
        if top.tag == 0x30:
            if tags != [0xBF2F, 0x5F37, 0x30, 0x30]:
                raise NotificationRejected(
                    "malformed",
                    "OtherSignedNotification must be BF2F metadata, 5F37 signature, eUICC and EUM certificates",
                )
            seq, address = _metadata(parts[0])
            event, iccid = _profile_event(parts[0])
            return NotificationParts(
                top.raw,
                "other",
                parts[0].raw,
                parts[1].value,
                seq,
                address,
                None,
                parts[2].raw,
                parts[3].raw,
                event,
                iccid,
            )
        if top.tag == 0xBF37:
            if tags != [0xBF27, 0x5F37]:
                raise NotificationRejected("malformed", "ProfileInstallationResult must be BF27 data, 5F37 signature")
            data = {c.tag: c for c in tlv.children(parts[0], what="ProfileInstallationResultData")}
            if 0x80 not in data or 0xBF2F not in data or 0xA2 not in data:
                raise NotificationRejected(
                    "malformed", "ProfileInstallationResultData needs transactionId, notificationMetadata, finalResult"
                )
            seq, address = _metadata(data[0xBF2F])
            return NotificationParts(
                top.raw, "pir", parts[0].raw, parts[1].value, seq, address, data[0x80].value, None, None
            )
    except RspError as exc:
        raise NotificationRejected("malformed", str(exc)) from None
    raise NotificationRejected("malformed", f"PendingNotification: unknown tag {top.tag:X}")


def certificate_eid(parts: NotificationParts) -> str:
    """The EID in the eUICC certificate of an otherSignedNotification (not yet verified)."""
    from rsp.pki.certs import eid_of

    if parts.euicc_certificate is None:
        raise NotificationRejected("malformed", "a ProfileInstallationResult carries no eUICC certificate")
    try:
        return eid_of(parts.euicc_certificate)
    except (RspError, ValueError) as exc:
        raise NotificationRejected("certificate", f"eUICC certificate unreadable: {exc}") from None


def _check_signature(parts: NotificationParts, key: Any, eid: str) -> VerifiedNotification:
    what = "euiccSignPIR" if parts.kind == "pir" else "euiccNotificationSignature"
    try:
        crypto.verify(key, parts.signed, parts.signature, what=what)
    except (RspError, ValueError, TypeError) as exc:
        raise NotificationRejected("signature", str(exc)) from None
    return VerifiedNotification(
        parts.raw, parts.kind, eid, parts.seq_number, parts.address, parts.transaction_id, parts.event, parts.iccid
    )


def verify_other(parts: NotificationParts, keys: KeyRing, eid: str) -> VerifiedNotification:
    """An otherSignedNotification attributed to ``eid``: its certificate chain to a trusted CI, the certificate's
    EID equal to ``eid``, then the signature over the received ``BF2F``."""
    cert_eid = certificate_eid(parts)
    # pragma below: upper/lower are the same on the 32 decimal digits of a certificate's EID
    wanted = eid.upper()  # pragma: no mutate
    if cert_eid != wanted:
        raise NotificationRejected("eid_mismatch", f"the eUICC certificate belongs to EID {cert_eid}, not {eid}")
    try:
        key = keys.public_key(cert_eid, parts.euicc_certificate, parts.eum_certificate)  # type: ignore[arg-type]
    except Exception as exc:  # ResultRejected and friends: the chain does not hold
        raise NotificationRejected("certificate", str(exc)) from None  # ResultRejected: str is its reason
    return _check_signature(parts, key, cert_eid)


def verify_pir(parts: NotificationParts, key: Any, eid: str) -> VerifiedNotification:
    """A PIR attributed to ``eid``, checked with ``key`` (the verified key of ``eid``'s stored certificate)."""
    if parts.kind != "pir":
        raise NotificationRejected("malformed", "not a ProfileInstallationResult")
    return _check_signature(parts, key, eid.upper())
