"""ES9+.AuthenticateClient (SGP.22 v2.5 §5.6.3, procedure §3.1.3).

Input: ``transactionId``, ``authenticateServerResponse`` (BF38 from ES10b.AuthenticateServer).
The SM-DP+ verifies the eUICC certificate chain (eUICC <- EUM <- the CI chosen in InitiateAuthentication),
euiccSignature1 over the **received** euiccSigned1 bytes, the transactionId and serverChallenge echoed, then
finds the download order (matchingId from ctxParams1, or the EID's pending order when it is empty) and checks
it (released, not expired, EID, attempts). It answers the profile metadata and smdpSigned2 signed with SK.DPpb
over ``smdpSigned2 || 5F37 euiccSignature1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization

from rsp import crypto, tlv
from rsp.errors import DecodeError, RspError
from smdpp import errors, profiles
from smdpp.certs import verify_euicc_chain
from smdpp.errors import Es9Error
from smdpp.es9plus.common import SmdpContext, b64, b64_field, log, save_session, session_for, transaction_id_field
from smdpp.session import AUTHENTICATED, INITIATED, Session
from smdpp.store import DOWNLOADABLE, Order, StoreError


@dataclass(frozen=True)
class AuthenticateResponseOk:
    euicc_signed1: tlv.Tlv
    euicc_signature1: tlv.Tlv  # the whole 5F37 TLV
    euicc_certificate: bytes
    eum_certificate: bytes
    transaction_id: bytes
    server_address: str
    server_challenge: bytes
    matching_id: str | None


def parse_authenticate_server_response(data: bytes) -> AuthenticateResponseOk:
    """BF38 -> its parts, cut from the received bytes (never re-encoded). Raises Es9Error for malformed data or
    an authenticateResponseError."""
    what = "AuthenticateServerResponse"
    try:
        top = tlv.parse_exact(data, what=what)
        if top.tag != 0xBF38:
            raise DecodeError(what, f"expected tag BF38, got {top.tag:X}", 0)
        inner = tlv.children(top, what=what)
        if len(inner) != 1:
            raise DecodeError(what, "must hold exactly one CHOICE alternative")
        choice = inner[0]
        if choice.tag == 0xA1:
            code = tlv.find(choice, 0x02, what=what)
            value = int.from_bytes(code.value, "big") if code else -1
            raise errors.REQUEST_INVALID.error(
                f"authenticateServerResponse is authenticateResponseError {value}: the eUICC refused the server"
            )
        if choice.tag != 0xA0:
            raise DecodeError(what, f"unknown alternative {choice.tag:X}")
        parts = tlv.children(choice, what=what)
        if len(parts) < 4 or [p.tag for p in parts[:4]] != [0x30, 0x5F37, 0x30, 0x30]:
            raise DecodeError(what, "authenticateResponseOk must be 30 euiccSigned1, 5F37, 30 eUICC cert, 30 EUM cert")
        signed1, sig1, euicc_cert, eum_cert = parts[:4]
        fields: dict[int, tlv.Tlv] = {}
        for c in tlv.children(signed1, what="EuiccSigned1"):
            fields.setdefault(c.tag, c)
        for tag, name in (
            (0x80, "transactionId"),
            (0x83, "serverAddress"),
            (0x84, "serverChallenge"),
            (0xBF22, "euiccInfo2"),
        ):
            if tag not in fields:
                raise DecodeError("EuiccSigned1", f"missing {name} ({tag:X})")
        ctx_params = fields.get(0xA0)
        if ctx_params is None:
            raise DecodeError("EuiccSigned1", "missing ctxParams1 (ctxParamsForCommonAuthentication A0)")
        mid_tlv = tlv.find(ctx_params, 0x80, what="CtxParams1")
        matching_id = None
        if mid_tlv is not None:
            try:
                matching_id = mid_tlv.value.decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError("CtxParams1", "matchingId is not UTF-8") from None
        if sig1.length != 64:
            raise DecodeError(what, f"euiccSignature1 must be 64 bytes, got {sig1.length}")
        try:
            server_address = fields[0x83].value.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("EuiccSigned1", "serverAddress is not UTF-8") from None
        return AuthenticateResponseOk(
            euicc_signed1=signed1,
            euicc_signature1=sig1,
            euicc_certificate=euicc_cert.raw,
            eum_certificate=eum_cert.raw,
            transaction_id=fields[0x80].value,
            server_address=server_address,
            server_challenge=fields[0x84].value,
            matching_id=matching_id,
        )
    except DecodeError as exc:
        raise errors.REQUEST_INVALID.error(f"authenticateServerResponse: {exc}") from None


def smdp_signed2(transaction_id: bytes, cc_required: bool, bpp_euicc_otpk: bytes | None = None) -> bytes:
    """``SmdpSigned2 ::= SEQUENCE { [0] transactionId, ccRequiredFlag BOOLEAN,
    bppEuiccOtpk [APPLICATION 73] OPTIONAL }``."""
    body = tlv.encode(0x80, transaction_id) + tlv.encode(0x01, b"\xff" if cc_required else b"\x00")
    if bpp_euicc_otpk is not None:
        body += tlv.encode(0x5F49, bpp_euicc_otpk)
    return tlv.encode(0x30, body)


def authenticate_client(ctx: SmdpContext, request: dict[str, Any]) -> dict[str, Any]:
    transaction_id = transaction_id_field(request)
    response = b64_field(request, "authenticateServerResponse", max_len=64_000)
    session = session_for(ctx, transaction_id)
    if session.state != INITIATED:
        raise errors.TRANSACTION_ID_UNKNOWN.error(
            f"TransactionId - Unknown: session {session.transaction_id_hex} is already {session.state}"
        )
    try:
        return _authenticate(ctx, session, response)
    except Es9Error:
        ctx.sessions.remove(transaction_id)
        raise


def _authenticate(ctx: SmdpContext, session: Session, response: bytes) -> dict[str, Any]:
    ok = parse_authenticate_server_response(response)
    euicc_cert, eid = verify_euicc_chain(
        ok.euicc_certificate, ok.eum_certificate, ctx.credentials.trusted_cis, session.ci_pkid
    )
    try:
        crypto.verify(euicc_cert, ok.euicc_signed1.raw, ok.euicc_signature1.value, what="euiccSignature1")
    except RspError as exc:
        raise errors.EUICC_SIGNATURE_INVALID.error(f"eUICC - Verification failed: {exc}") from None
    if ok.transaction_id != session.transaction_id:
        raise errors.TRANSACTION_ID_UNKNOWN.error(
            "TransactionId - Unknown: the transactionId signed by the eUICC differs from the session's"
        )
    if ok.server_challenge != session.server_challenge:
        raise errors.EUICC_SIGNATURE_INVALID.error("eUICC - Verification failed: serverChallenge does not match")

    order = _select_order(ctx, ok.matching_id, eid)
    order = _claim(ctx, order, eid, session)
    profile = profiles.get_profile(order.profile)
    ctx.store.remember_euicc(eid, euicc_cert.public_bytes(serialization.Encoding.DER))

    creds = ctx.credentials.sets[session.cred_pkid]
    metadata = profiles.store_metadata_request(profile, order.iccid, ctx.config.effective_notification_address)
    signed2 = smdp_signed2(session.transaction_id, order.cc_required)
    signature2 = crypto.sign(creds.dppb_key, signed2 + ok.euicc_signature1.raw)
    session.eid = eid
    session.euicc_certificate = euicc_cert
    session.matching_id = order.matching_id
    session.iccid = order.iccid
    session.profile = order.profile
    session.cc_required = order.cc_required
    session.smdp_signature2_tlv = tlv.encode(0x5F37, signature2)
    session.state = AUTHENTICATED
    save_session(ctx, session, expect=INITIATED)
    log.info("authenticateClient: session %s EID %s order %s", session.transaction_id_hex, eid, order.matching_id)
    return {
        "transactionId": session.transaction_id_hex,
        "profileMetadata": b64(metadata),
        "smdpSigned2": b64(signed2),
        "smdpSignature2": b64(session.smdp_signature2_tlv),
        "smdpCertificate": b64(creds.dppb_der),
    }


def _select_order(ctx: SmdpContext, matching_id: str | None, eid: str) -> Order:
    if matching_id:
        order = ctx.store.get(matching_id)
        if order is None:
            raise errors.MATCHING_ID_REFUSED.error(f"Matching ID - Refused: no download order {matching_id}")
        return order
    order = ctx.store.find_for_eid(eid)
    if order is None:
        raise errors.MATCHING_ID_REFUSED.error(
            "Matching ID - Refused: empty matchingId and no released download order for this EID"
        )
    return order


def _claim(ctx: SmdpContext, order: Order, eid: str, session: Session) -> Order:
    """Check the order against this eUICC and count the attempt (one transaction guarded by the state)."""
    if order.state not in DOWNLOADABLE:
        reason = order.why_closed  # installed: already used; error: its last error; cancelled; not released
        raise errors.MATCHING_ID_REFUSED.error(
            f"Matching ID - Refused: order {order.matching_id} is {order.state} ({reason})"
        )
    if order.expired():
        raise errors.DOWNLOAD_ORDER_EXPIRED.error(f"Download order {order.matching_id} expired")
    if order.eid is not None and order.eid != eid:
        raise errors.EID_REFUSED.error(f"EID - Refused: order {order.matching_id} is linked to another EID")
    if order.state == "downloaded" and order.bound_eid not in (None, eid):
        raise errors.EID_REFUSED.error(f"EID - Refused: order {order.matching_id} was downloaded by another eUICC")
    if order.download_attempts >= order.download_max:
        ctx.store.update(
            order.matching_id,
            state="error",
            last_error="download attempts exhausted",
            detail="download attempts exhausted",
        )
        raise errors.DOWNLOAD_RETRIES_EXCEEDED.error(
            f"Download order {order.matching_id}: {order.download_attempts} download attempts, "
            f"at most {order.download_max}"
        )
    try:
        fields: dict[str, Any] = {
            "download_attempts": order.download_attempts + 1,
            "bound_eid": eid,
            "transaction_id": session.transaction_id_hex,
        }
        if order.eid is None:
            fields["eid"] = eid
        return ctx.store.update(
            order.matching_id,
            expect=DOWNLOADABLE,
            detail=f"download attempt {order.download_attempts + 1} by EID {eid} "
            f"(session {session.transaction_id_hex})",
            **fields,
        )
    except StoreError as exc:
        raise errors.MATCHING_ID_REFUSED.error(f"Matching ID - Refused: {exc}") from None
