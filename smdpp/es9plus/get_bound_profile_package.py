"""ES9+.GetBoundProfilePackage (SGP.22 v2.5 §5.6.2, procedure §3.1.3.2-3).

Input: ``transactionId``, ``prepareDownloadResponse`` (BF21 from ES10b.PrepareDownload).
The SM-DP+ verifies euiccSignature2 over the **received** euiccSigned2 bytes || ``5F37 smdpSignature2`` with
the eUICC key of the session, checks the confirmation code (``hashCc = SHA256(SHA256(cc) || transactionId)``,
retry limit per order: a wrong code leaves the order open for a new download while attempts remain, also after
the LPA cancels the session, see ``cancel_session``; the last allowed wrong code ends it), the order (still
downloadable, not expired, same eUICC), then binds the profile for
otPK.EUICC.ECKA (``smdpp.binding``) and marks the order ``downloaded``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from rsp import crypto, tlv
from rsp.errors import DecodeError, RspError
from smdpp import binding, errors, profiles
from smdpp.errors import Es9Error
from smdpp.es9plus.common import SmdpContext, b64, b64_field, log, save_session, session_for, transaction_id_field
from smdpp.session import AUTHENTICATED, BOUND, Session
from smdpp.store import StoreError


@dataclass(frozen=True)
class PrepareDownloadOk:
    euicc_signed2: tlv.Tlv
    euicc_signature2: bytes
    transaction_id: bytes
    euicc_otpk: bytes
    hash_cc: bytes | None


def parse_prepare_download_response(data: bytes) -> PrepareDownloadOk:
    what = "PrepareDownloadResponse"
    try:
        top = tlv.parse_exact(data, what=what)
        if top.tag != 0xBF21:
            raise DecodeError(what, f"expected tag BF21, got {top.tag:X}", 0)
        inner = tlv.children(top, what=what)
        if len(inner) != 1:
            raise DecodeError(what, "must hold exactly one CHOICE alternative")
        choice = inner[0]
        if choice.tag == 0xA1:
            code = tlv.find(choice, 0x02, what=what)
            value = int.from_bytes(code.value, "big") if code else -1
            raise errors.PREPARE_DOWNLOAD_ERROR.error(f"prepareDownloadResponse is downloadResponseError {value}")
        if choice.tag != 0xA0:
            raise DecodeError(what, f"unknown alternative {choice.tag:X}")
        parts = tlv.children(choice, what=what)
        if len(parts) < 2 or parts[0].tag != 0x30 or parts[1].tag != 0x5F37:
            raise DecodeError(what, "downloadResponseOk must be 30 euiccSigned2, 5F37 euiccSignature2")
        signed2, sig2 = parts[0], parts[1]
        fields = {c.tag: c for c in tlv.children(signed2, what="EUICCSigned2")}
        if 0x80 not in fields or 0x5F49 not in fields:
            raise DecodeError("EUICCSigned2", "missing transactionId (80) or euiccOtpk (5F49)")
        if sig2.length != 64:
            raise DecodeError(what, f"euiccSignature2 must be 64 bytes, got {sig2.length}")
        hash_cc = fields[0x04].value if 0x04 in fields else None
        return PrepareDownloadOk(signed2, sig2.value, fields[0x80].value, fields[0x5F49].value, hash_cc)
    except DecodeError as exc:
        raise errors.REQUEST_INVALID.error(f"prepareDownloadResponse: {exc}") from None


def expected_hash_cc(cc_hash: bytes, transaction_id: bytes) -> bytes:
    """SGP.22 §3.1.3.2: hashCc = SHA256(SHA256(confirmation code) || transactionId)."""
    return hashlib.sha256(cc_hash + transaction_id).digest()


def get_bound_profile_package(ctx: SmdpContext, request: dict[str, Any]) -> dict[str, Any]:
    transaction_id = transaction_id_field(request)
    response = b64_field(request, "prepareDownloadResponse", max_len=8192)
    session = session_for(ctx, transaction_id)
    if session.state not in (AUTHENTICATED, BOUND):
        raise errors.TRANSACTION_ID_UNKNOWN.error(
            f"TransactionId - Unknown: session {session.transaction_id_hex} is {session.state}, not authenticated"
        )
    try:
        return _bind(ctx, session, response)
    except _KeepSession as keep:
        raise keep.error from None
    except Es9Error:
        ctx.sessions.remove(transaction_id)
        raise


class _KeepSession(Exception):
    """An error after which the LPA may retry in the same session (a wrong confirmation code)."""

    def __init__(self, error: Es9Error):
        self.error = error


def _bind(ctx: SmdpContext, session: Session, response: bytes) -> dict[str, Any]:
    assert session.euicc_certificate is not None and session.smdp_signature2_tlv is not None
    assert session.matching_id is not None and session.iccid is not None and session.profile is not None
    ok = parse_prepare_download_response(response)
    try:
        crypto.verify(
            session.euicc_certificate,
            ok.euicc_signed2.raw + session.smdp_signature2_tlv,
            ok.euicc_signature2,
            what="euiccSignature2",
        )
    except RspError as exc:
        raise errors.EUICC_SIGNATURE_INVALID.error(f"eUICC - Verification failed: {exc}") from None
    if ok.transaction_id != session.transaction_id:
        raise errors.TRANSACTION_ID_UNKNOWN.error(
            "TransactionId - Unknown: the transactionId signed by the eUICC differs from the session's"
        )
    order = ctx.store.get(session.matching_id)
    if order is None:
        raise errors.MATCHING_ID_REFUSED.error("Matching ID - Refused: the order was removed")
    if order.state not in ("released", "downloaded"):
        raise errors.MATCHING_ID_REFUSED.error(f"Matching ID - Refused: order {order.matching_id} is {order.state}")
    if order.bound_eid != session.eid or order.transaction_id != session.transaction_id_hex:
        raise errors.BPP_REBINDING_REFUSED.error(
            f"Profile - Not allowed: order {order.matching_id} was taken over by another download session"
        )
    if order.expired():
        raise errors.DOWNLOAD_ORDER_EXPIRED.error(f"Download order {order.matching_id} expired")
    if order.cc_required:
        cc_hash = ctx.store.cc_hash(order.matching_id)
        assert cc_hash is not None
        if ok.hash_cc is None:
            raise _KeepSession(errors.CONFIRMATION_CODE_MISSING.error())
        if not hmac.compare_digest(ok.hash_cc, expected_hash_cc(cc_hash, session.transaction_id)):
            after = ctx.store.count_failed_cc(order.matching_id)
            if after.state == "error":
                raise errors.CONFIRMATION_CODE_RETRIES_EXCEEDED.error(
                    f"Confirmation Code - Maximum number of retries exceeded ({after.cc_attempts} of "
                    f"{after.cc_max} attempts used): download order {order.matching_id} is ended"
                )
            session.cc_refused += 1
            save_session(ctx, session, expect=session.state)
            left = after.cc_max - after.cc_attempts
            raise _KeepSession(
                errors.CONFIRMATION_CODE_REFUSED.error(
                    f"Confirmation Code - Refused ({after.cc_attempts} of {after.cc_max} attempts used): download "
                    f"order {order.matching_id} stays open for {left} more attempt{'s' if left != 1 else ''}, "
                    "also after this session is cancelled"
                )
            )
    profile = profiles.get_profile(order.profile)
    metadata = profiles.store_metadata_request(profile, order.iccid, ctx.config.effective_notification_address)
    creds = ctx.credentials.sets[session.cred_pkid]
    try:
        bound = binding.bind(
            profile=profile,
            iccid=order.iccid,
            metadata=metadata,
            transaction_id=session.transaction_id,
            eid=order.bound_eid or "",
            euicc_otpk=ok.euicc_otpk,
            dppb_key=creds.dppb_key,
        )
    except RspError as exc:
        raise errors.REQUEST_INVALID.error(f"prepareDownloadResponse: euiccOtpk unusable: {exc}") from None
    try:
        ctx.store.update(
            order.matching_id,
            expect=("released", "downloaded"),
            state="downloaded",
            detail=f"bound profile package delivered (session {session.transaction_id_hex}, {len(bound.bpp)} bytes)",
        )
    except StoreError as exc:
        raise errors.MATCHING_ID_REFUSED.error(f"Matching ID - Refused: {exc}") from None
    read_in = session.state
    session.euicc_otpk = ok.euicc_otpk
    session.state = BOUND
    save_session(ctx, session, expect=read_in)
    log.info(
        "getBoundProfilePackage: session %s order %s, %d bytes",
        session.transaction_id_hex,
        order.matching_id,
        len(bound.bpp),
    )
    return {"transactionId": session.transaction_id_hex, "boundProfilePackage": b64(bound.bpp)}
