"""ES9+.CancelSession (SGP.22 v2.5 §5.6.5, procedure §3.1.4 / §3.1.5).

Input: ``transactionId``, ``cancelSessionResponse`` (BF41 from ES10b.CancelSession, signed by the eUICC).
The SM-DP+ verifies euiccCancelSessionSignature over the received ``euiccCancelSessionSigned`` bytes with the
eUICC key of the session (when the session got that far), the signed transactionId and the smdpOid (from
CERT.DPauth), ends the session and moves the order according to the reason:

============================== =========================================================
reason                         order afterwards
============================== =========================================================
postponed (1), timeout (2)     back to ``released``: the same matchingId may be used again
endUserRejection (0),          ``error``: the order is over (the matchingId is refused)
pprNotAllowed (3),
metadataMismatch (4),
loadBppExecutionError (5),
undefinedReason (127)
============================== =========================================================

**After a wrong confirmation code** the order stays ``released`` whatever the reason, as long as attempts remain.
SGP.22 counts wrong codes per order against a retry limit (getBoundProfilePackage, "Confirmation Code - Refused"
/ "Maximum number of retries exceeded"), and an LPA that gets an ES9+ error ends the session: lpac's download
sends ES10b/ES9+ CancelSession with endUserRejection after any error, its Android binding with undefinedReason.
Ending the order on that cancel would make every refused code final and the retry count a lie, so the lab
SM-DP+ keeps the order open for a new download with the right code until the limit is reached (then the order is
``error``: "confirmation code retries exhausted").

**A session the SM-DP+ already ended** while answering an error (authenticateClient or getBoundProfilePackage
failed) is not cancelled again: the LPA's cancelSession that SGP.22 asks for after such an error is answered with
success and logged at info as expected, once; after that, and for a transactionId never seen, the answer is
"TransactionId - Unknown" (8.10.1/3.9). An order that is already over (installed, error, cancelled) is left as it
is.
"""

from __future__ import annotations

from typing import Any

from rsp import crypto, tlv
from rsp.errors import DecodeError, RspError
from smdpp import errors
from smdpp.certs import smdp_oid
from smdpp.es9plus.common import SmdpContext, b64_field, log, session_for, transaction_id_field
from smdpp.store import StoreError

REASONS = {
    0: "endUserRejection",
    1: "postponed",
    2: "timeout",
    3: "pprNotAllowed",
    4: "metadataMismatch",
    5: "loadBppExecutionError",
    127: "undefinedReason",
}
KEEP_ORDER = (1, 2)


def decode_oid(value: bytes) -> str:
    if not value:
        raise DecodeError("OBJECT IDENTIFIER", "empty")
    arcs: list[int] = []
    n = 0
    for i, b in enumerate(value):
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(n)
            n = 0
        elif i == len(value) - 1:
            raise DecodeError("OBJECT IDENTIFIER", "truncated arc")
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(a) for a in head + arcs[1:])


def _parse(raw: bytes) -> tuple[tlv.Tlv, tlv.Tlv, dict[int, bytes], str, int]:
    """CancelSessionResponse -> (euiccCancelSessionSigned, signature, fields, smdpOid, reason)."""
    try:
        top = tlv.parse_exact(raw, what="CancelSessionResponse")
        if top.tag != 0xBF41:
            raise DecodeError("CancelSessionResponse", f"expected tag BF41, got {top.tag:X}", 0)
        inner = tlv.children(top, what="CancelSessionResponse")
        if len(inner) != 1:
            raise DecodeError("CancelSessionResponse", "must hold exactly one CHOICE alternative")
        if inner[0].tag == 0x81:
            code = int.from_bytes(inner[0].value, "big")
            raise errors.REQUEST_INVALID.error(f"cancelSessionResponse is cancelSessionResponseError {code}")
        if inner[0].tag != 0xA0:
            raise DecodeError("CancelSessionResponse", f"unknown alternative {inner[0].tag:X}")
        parts = tlv.children(inner[0], what="CancelSessionResponseOk")
        if len(parts) < 2 or parts[0].tag != 0x30 or parts[1].tag != 0x5F37:
            raise DecodeError("CancelSessionResponseOk", "must be 30 euiccCancelSessionSigned, 5F37 signature")
        signed, sig = parts[0], parts[1]
        f = {c.tag: c.value for c in tlv.children(signed, what="EuiccCancelSessionSigned")}
        # AUTOMATIC TAGS: 80 transactionId, 81 smdpOid, 82 reason (also accepted: a universal 06 smdpOid
        # followed by 81 reason, as some implementations encode it)
        oid_tag, reason_tag = (0x81, 0x82) if 0x82 in f else (0x06, 0x81)
        for tag, name in ((0x80, "transactionId"), (oid_tag, "smdpOid"), (reason_tag, "reason")):
            if tag not in f:
                raise DecodeError("EuiccCancelSessionSigned", f"missing {name} ({tag:X})")
        return signed, sig, f, decode_oid(f[oid_tag]), int.from_bytes(f[reason_tag], "big")
    except DecodeError as exc:
        raise errors.REQUEST_INVALID.error(f"cancelSessionResponse: {exc}") from None


def cancel_session(ctx: SmdpContext, request: dict[str, Any]) -> dict[str, Any]:
    transaction_id = transaction_id_field(request)
    raw = b64_field(request, "cancelSessionResponse", max_len=4096)
    session = ctx.sessions.get(transaction_id)
    if session is None:
        ended = ctx.sessions.ended_after_error(transaction_id)
        if ended is None:
            session_for(ctx, transaction_id)  # raises TransactionId - Unknown
        assert ended is not None
        signed, sig, f, _oid, reason = _parse(raw)
        if f[0x80] != transaction_id:
            raise errors.TRANSACTION_ID_UNKNOWN.error(
                "TransactionId - Unknown: the transactionId signed by the eUICC differs from the request's"
            )
        if ended.euicc_certificate is not None:
            _verify(ended.euicc_certificate, signed, sig)
        log.info(
            "cancelSession: session %s had already ended when %s failed (reason %s): nothing left to cancel",
            transaction_id.hex().upper(),
            ended.failed_step,
            REASONS.get(reason, reason),
        )
        return {}
    signed, sig, f, oid, reason = _parse(raw)
    if session.euicc_certificate is not None:
        _verify(session.euicc_certificate, signed, sig)
    if f[0x80] != session.transaction_id:
        raise errors.TRANSACTION_ID_UNKNOWN.error(
            "TransactionId - Unknown: the transactionId signed by the eUICC differs from the session's"
        )
    expected_oid = smdp_oid(ctx.credentials.sets[session.cred_pkid].dpauth_cert)
    if expected_oid is not None and oid != expected_oid:
        raise errors.SMDP_OID_INVALID.error(
            f"SM-DP+ - Invalid Association: smdpOid {oid}, this SM-DP+ is {expected_oid}"
        )
    if reason not in REASONS:
        raise errors.REQUEST_INVALID.error(f"cancelSessionResponse: unknown reason {reason}")

    ctx.sessions.remove(session.transaction_id, after_error=False)
    name = REASONS[reason]
    if session.matching_id:
        _move_order(ctx, session, name, keep=reason in KEEP_ORDER)
    log.info("cancelSession: session %s cancelled (%s)", session.transaction_id_hex, name)
    return {}


def _verify(certificate, signed: tlv.Tlv, sig: tlv.Tlv) -> None:
    try:
        crypto.verify(certificate, signed.raw, sig.value, what="euiccCancelSessionSignature")
    except RspError as exc:
        raise errors.EUICC_SIGNATURE_INVALID.error(f"eUICC - Verification failed: {exc}") from None


def _move_order(ctx: SmdpContext, session, name: str, *, keep: bool) -> None:
    matching_id = session.matching_id
    order = ctx.store.get(matching_id)
    if order is None or order.state not in ("released", "downloaded"):
        log.info(
            "cancelSession: order %s is %s already; left as it is",
            matching_id,
            order.state if order is not None else "gone",
        )
        return
    try:
        if keep:
            ctx.store.update(
                matching_id,
                expect=("released", "downloaded"),
                state="released",
                transaction_id=None,
                detail=f"session cancelled ({name}); order kept",
            )
        elif session.cc_refused and order.cc_attempts < order.cc_max:
            left = order.cc_max - order.cc_attempts
            ctx.store.update(
                matching_id,
                expect=("released", "downloaded"),
                state="released",
                transaction_id=None,
                detail=f"session cancelled ({name}) after a wrong confirmation code; order kept, "
                f"{left} confirmation code attempt{'s' if left != 1 else ''} left",
            )
        else:
            ctx.store.update(
                matching_id,
                expect=("released", "downloaded"),
                state="error",
                last_error=f"cancelled: {name}",
                detail=f"session cancelled ({name})",
            )
    except StoreError as exc:  # the order moved meanwhile (another session, the operator)
        log.info("cancelSession: order %s not moved: %s", matching_id, exc)
