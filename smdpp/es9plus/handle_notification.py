"""ES9+.HandleNotification (SGP.22 v2.5 §5.6.4, procedure §3.5).

Input: ``pendingNotification``: a ProfileInstallationResult (BF37) or an OtherSignedNotification (30).
* PIR: euiccSignPIR is verified over the received ``BF27`` bytes with the eUICC key learned in
  AuthenticateClient (kept in the store, so a PIR that arrives after a restart still verifies). A verified
  success result marks the order ``installed``, a verified error result marks it ``error``; the session ends.
  The same PIR delivered again (an LPA that could not remove it from the eUICC sends it once more) is recorded
  and logged at info; only a PIR that conflicts with the order's state (e.g. the operator cancelled it) warns.
* OtherSignedNotification (install/enable/disable/delete of a profile this SM-DP+ names in its metadata): the
  eUICC and EUM certificates come with it; the chain is checked against the trusted CIs and the signature over
  the ``BF2F`` NotificationMetadata bytes; the notification is recorded.
Every received notification is recorded with ``verified`` true or false. The answer is HTTP 204 (no body); a
malformed request gets a functionExecutionStatus error.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509

from rsp import crypto, tlv
from rsp.errors import DecodeError, RspError
from smdpp import errors
from smdpp.certs import authority_key_id, verify_euicc_chain
from smdpp.errors import Es9Error
from smdpp.es9plus.common import SmdpContext, b64_field, log
from smdpp.profiles import bcd_to_iccid
from smdpp.store import StoreError

EVENTS = ("install", "enable", "disable", "delete")
BPP_COMMANDS = {
    0: "initialiseSecureChannel",
    1: "configureISDP",
    2: "storeMetadata",
    3: "storeMetadata2",
    4: "replaceSessionKeys",
    5: "loadProfileElements",
}


def decode_event(bits: bytes) -> str | None:
    """NotificationEvent BIT STRING contents -> the event name of the first bit set."""
    if len(bits) < 2:
        return None
    value = int.from_bytes(bits[1:], "big")
    width = (len(bits) - 1) * 8
    for i, name in enumerate(EVENTS):
        if value >> (width - 1 - i) & 1:
            return name
    return None


def _metadata(meta: tlv.Tlv) -> tuple[int | None, str | None, str | None, str | None]:
    """NotificationMetadata (BF2F) -> (seqNumber, event, notificationAddress, iccid)."""
    f = {c.tag: c.value for c in tlv.children(meta, what="NotificationMetadata")}
    seq = int.from_bytes(f[0x80], "big", signed=True) if 0x80 in f else None
    event = decode_event(f[0x81]) if 0x81 in f else None
    address = f[0x0C].decode("utf-8", "replace") if 0x0C in f else None
    iccid = bcd_to_iccid(f[0x5A]) if 0x5A in f else None
    return seq, event, address, iccid


def handle_notification(ctx: SmdpContext, request: dict[str, Any]) -> None:
    raw = b64_field(request, "pendingNotification", max_len=64_000)
    try:
        top = tlv.parse_exact(raw, what="PendingNotification")
        if top.tag == 0xBF37:
            _pir(ctx, top)
        elif top.tag == 0x30:
            _other(ctx, top)
        else:
            raise DecodeError("PendingNotification", f"expected BF37 or 30, got tag {top.tag:X}", 0)
    except DecodeError as exc:
        raise errors.REQUEST_INVALID.error(f"pendingNotification: {exc}") from None


def _pir(ctx: SmdpContext, top: tlv.Tlv) -> None:
    data = tlv.require(top, 0xBF27, what="ProfileInstallationResult")
    sig = tlv.require(top, 0x5F37, what="ProfileInstallationResult")
    fields = {c.tag: c for c in tlv.children(data, what="ProfileInstallationResultData")}
    for tag, name in ((0x80, "transactionId"), (0xBF2F, "notificationMetadata"), (0xA2, "finalResult")):
        if tag not in fields:
            raise DecodeError("ProfileInstallationResultData", f"missing {name} ({tag:X})")
    txid = fields[0x80].value.hex().upper()
    seq, event, _address, iccid = _metadata(fields[0xBF2F])
    final = tlv.children(fields[0xA2], what="finalResult")
    if len(final) != 1 or final[0].tag not in (0xA0, 0xA1):
        raise DecodeError("ProfileInstallationResultData", "finalResult must be A0 success or A1 error")
    success = final[0].tag == 0xA0
    result_text = "success"
    if not success:
        ef = {c.tag: c.value for c in tlv.children(final[0], what="errorResult")}
        cmd = int.from_bytes(ef.get(0x80, b"\x7f"), "big")
        reason = int.from_bytes(ef.get(0x81, b"\x7f"), "big")
        result_text = f"error: bppCommandId {cmd} ({BPP_COMMANDS.get(cmd, '?')}), errorReason {reason}"

    order = ctx.store.find_by_transaction(txid)
    session = ctx.sessions.get(fields[0x80].value)
    cert: x509.Certificate | None = session.euicc_certificate if session else None
    eid = session.eid if session else (order.bound_eid if order else None)
    if cert is None and eid:
        der = ctx.store.euicc_certificate(eid)
        cert = x509.load_der_x509_certificate(der) if der else None
    verified = False
    detail = f"PIR {result_text}"
    if cert is None:
        detail += "; not verified: no eUICC key known for this transactionId"
    else:
        try:
            crypto.verify(cert, data.raw, sig.value, what="euiccSignPIR")
            verified = True
        except RspError as exc:
            detail += f"; not verified: {exc}"
    ctx.store.add_notification(
        kind="pir",
        raw=top.raw,
        verified=verified,
        detail=detail,
        event=event or "install",
        seq_number=seq,
        iccid=iccid,
        eid=eid,
        transaction_id=txid,
        matching_id=order.matching_id if order else None,
    )
    log.info("handleNotification: PIR for session %s: %s (verified %s)", txid, result_text, verified)
    if not verified or order is None:
        return
    current = ctx.store.get(order.matching_id)
    if current is not None and current.state in ("installed", "error") and session is None:
        # a PIR delivered again (the eUICC keeps it until the LPA removes it, SGP.22 §3.5): recorded, nothing to do
        log.info(
            "handleNotification: PIR for session %s again; order %s is %s already",
            txid,
            order.matching_id,
            current.state,
        )
        return
    try:
        if success:
            ctx.store.update(
                order.matching_id,
                expect=("downloaded",),
                state="installed",
                detail=f"installed on EID {eid} (PIR seq {seq})",
            )
        else:
            ctx.store.update(
                order.matching_id,
                expect=("downloaded", "released"),
                state="error",
                last_error=result_text,
                detail=f"PIR {result_text}",
            )
    except StoreError as exc:  # the order moved on meanwhile (the operator cancelled it): a real conflict
        log.warning("handleNotification: order %s not updated: %s", order.matching_id, exc)
    ctx.sessions.remove(fields[0x80].value, after_error=False)


def _other(ctx: SmdpContext, top: tlv.Tlv) -> None:
    parts = tlv.children(top, what="OtherSignedNotification")
    if len(parts) < 4 or [p.tag for p in parts[:4]] != [0xBF2F, 0x5F37, 0x30, 0x30]:
        raise DecodeError("OtherSignedNotification", "must be BF2F, 5F37, 30 eUICC cert, 30 EUM cert")
    meta, sig, euicc_der, eum_der = parts[0], parts[1], parts[2].raw, parts[3].raw
    seq, event, _address, iccid = _metadata(meta)
    verified = False
    eid = None
    try:
        eum = x509.load_der_x509_certificate(eum_der)
        ci_pkid = authority_key_id(eum) or b""
        cert, eid = verify_euicc_chain(euicc_der, eum_der, ctx.credentials.trusted_cis, ci_pkid)
        crypto.verify(cert, meta.raw, sig.value, what="euiccNotificationSignature")
        verified = True
        detail = f"{event or 'unknown'} notification"
    except (Es9Error, RspError, ValueError) as exc:
        detail = f"{event or 'unknown'} notification, not verified: {exc}"
    ctx.store.add_notification(
        kind="other", raw=top.raw, verified=verified, detail=detail, event=event, seq_number=seq, iccid=iccid, eid=eid
    )
    log.info("handleNotification: %s (verified %s)", detail, verified)
