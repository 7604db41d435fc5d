"""ES10b.PrepareDownload - SGP.22 v2.5 §5.7.5.

Request ``BF21 {30 smdpSigned2 {80 txid, 01 ccRequiredFlag, [5F49 bppEuiccOtpk]}, 5F37 smdpSignature2,
[04 hashCc], 30 smdpCertificate (CERT.DPpb)}``.

Checks, each with its DownloadErrorCode: an AuthenticateServer session exists -> else ``noSessionContext(4)``;
CERT.DPpb is valid under a trusted CI with the id-rspRole-dp-pb policy and the same SM-DP+ OID as CERT.DPauth ->
else ``invalidCertificate(1)`` (``unsupportedCurve(3)`` for a foreign curve); smdpSignature2 verifies over the
received smdpSigned2 TLV || ``5F37 40 euiccSignature1`` -> else ``invalidSignature(2)``; the transactionId is the
session's -> else ``invalidTransactionId(5)``; hashCc is present when ccRequiredFlag is TRUE -> else
``undefinedError(127)``.

Success: a one-time key pair on the curve of CERT.DPpb (re-used when ``bppEuiccOtpk`` names the previous one),
``BF21 {A0 {30 euiccSigned2 {80 txid, 5F49 euiccOtpk, [04 hashCc]}, 5F37 euiccSignature2}}`` where
euiccSignature2 covers euiccSigned2 || the received ``5F37`` smdpSignature2 TLV.
"""

from __future__ import annotations

from euicc import der
from euicc.context import SW_WRONG_DATA, Context, Es10Reject, PrepareSession
from euicc.es10._common import children
from euicc.identity import ROLE_DP_PB, CertificateCheckError, registered_oid
from rsp import crypto, tlv
from rsp.errors import DecodeError

TAG = 0xBF21
STEP = "PrepareDownload"

INVALID_CERTIFICATE = 1
INVALID_SIGNATURE = 2
UNSUPPORTED_CURVE = 3
NO_SESSION_CONTEXT = 4
INVALID_TRANSACTION_ID = 5
UNDEFINED_ERROR = 127


def error(txid: bytes, code: int) -> bytes:
    return tlv.encode(TAG, tlv.encode(0xA1, tlv.encode(0x80, txid) + der.integer(0x02, code)))


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    parts = children(request, STEP)
    tags = [p.tag for p in parts]
    if tags not in ([0x30, 0x5F37, 0x30], [0x30, 0x5F37, 0x04, 0x30]):
        raise Es10Reject(SW_WRONG_DATA, STEP, "expected 30 smdpSigned2, 5F37, [04 hashCc], 30 certificate")
    signed2, signature2, cert = parts[0], parts[1], parts[-1]
    hash_cc = parts[2].value if len(parts) == 4 else None
    try:
        f = der.fields(signed2, "smdpSigned2")
        txid = f[0x80].value
        cc_required = der.decode_bool(f[0x01].value, "ccRequiredFlag")
        bpp_otpk = f[0x5F49].value if 0x5F49 in f else None
    except (KeyError, DecodeError) as exc:
        raise Es10Reject(SW_WRONG_DATA, STEP, f"smdpSigned2 malformed: {exc}") from None
    if hash_cc is not None and len(hash_cc) != 32:
        raise Es10Reject(SW_WRONG_DATA, STEP, "hashCc must be 32 bytes")

    auth = ctx.session.auth
    if auth is None:
        return error(txid, NO_SESSION_CONTEXT)
    try:
        dppb = ctx.identity.verify_server_certificate(cert.raw, ROLE_DP_PB)
    except CertificateCheckError as exc:
        return error(txid, UNSUPPORTED_CURVE if exc.kind == "curve" else INVALID_CERTIFICATE)
    smdp_oid = registered_oid(dppb)
    if smdp_oid is None or smdp_oid != auth.smdp_oid:
        return error(txid, INVALID_CERTIFICATE)
    signed_input = signed2.raw + tlv.encode(0x5F37, auth.euicc_signature1)
    if not crypto.is_valid_signature(dppb, signed_input, signature2.value):
        return error(txid, INVALID_SIGNATURE)
    if txid != auth.transaction_id:
        return error(txid, INVALID_TRANSACTION_ID)
    if cc_required and hash_cc is None:
        return error(txid, UNDEFINED_ERROR)

    curve = crypto.curve_name(dppb)
    last = ctx.session.last_ot
    if bpp_otpk is not None and last is not None and last[1] == bpp_otpk and crypto.curve_name(last[0]) == curve:
        otsk, otpk = last
    else:
        otsk = crypto.generate_key(curve)
        otpk = crypto.public_point(otsk)
    ctx.session.last_ot = (otsk, otpk)

    body = tlv.encode(0x80, txid) + tlv.encode(0x5F49, otpk)
    if hash_cc is not None:
        body += tlv.encode(0x04, hash_cc)
    euicc_signed2 = tlv.encode(0x30, body)
    signature = ctx.identity.sign(euicc_signed2 + signature2.raw)
    ctx.session.prepared = PrepareSession(
        otsk=otsk, otpk=otpk, dppb=dppb, smdp_oid=smdp_oid, smdp_signature2=signature2.value, hash_cc=hash_cc
    )
    ctx.session.bpp = None
    return tlv.encode(TAG, tlv.encode(0xA0, euicc_signed2 + tlv.encode(0x5F37, signature)))
