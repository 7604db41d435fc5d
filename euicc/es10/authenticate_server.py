"""ES10b.AuthenticateServer - SGP.22 v2.5 §5.7.13 (SGP32-AuthenticateServerResponse).

Request ``BF38 {30 serverSigned1 {80 txid, 81 euiccChallenge, 83 serverAddress, 84 serverChallenge},
5F37 serverSignature1, 04 euiccCiPKIdToBeUsed, 30 serverCertificate (CERT.DPauth), A0 ctxParams1}``.

Checks, in this order, each with its AuthenticateErrorCode:

1. ``euiccCiPKIdToBeUsed`` names a CI this card signs under -> else ``ciPKUnknown(7)``;
2. CERT.DPauth parses, is signed by a trusted CI and carries the id-rspRole-dp-auth policy -> else
   ``invalidCertificate(1)``; its key is on P-256 / brainpoolP256r1 -> else ``unsupportedCurve(3)``; it names
   the SM-DP+ OID (subjectAltName registeredID) -> else ``invalidOid(5)``;
3. serverSignature1 verifies over the received ``30..`` serverSigned1 TLV -> else ``invalidSignature(2)``;
4. a challenge was issued by GetEuiccChallenge -> else ``noSessionContext(4)``; it equals
   ``euiccChallenge`` -> else ``euiccChallengeMismatch(6)``;
5. serverAddress is a non-empty FQDN (no spaces or control characters) -> else ``undefinedError(127)``.

Success: ``BF38 {A0 {30 euiccSigned1 {80 txid, 83 serverAddress, 84 serverChallenge, BF22 euiccInfo2,
A0 ctxParams1}, 5F37 euiccSignature1, CERT.EUICC, CERT.EUM}}``; the serverAddress and ctxParams1 TLVs are copied
from the request bytes. Error: ``BF38 {A1 {80 txid, 02 code}}``. The challenge is single-use.
"""

from __future__ import annotations

from euicc import der
from euicc.context import SW_WRONG_DATA, AuthSession, Context, Es10Reject
from euicc.es10._common import children
from euicc.es10.get_euicc_info2 import euicc_info2
from euicc.identity import ROLE_DP_AUTH, CertificateCheckError, registered_oid
from rsp import crypto, tlv
from rsp.errors import DecodeError

TAG = 0xBF38
STEP = "AuthenticateServer"

INVALID_CERTIFICATE = 1
INVALID_SIGNATURE = 2
UNSUPPORTED_CURVE = 3
NO_SESSION_CONTEXT = 4
INVALID_OID = 5
EUICC_CHALLENGE_MISMATCH = 6
CI_PK_UNKNOWN = 7
UNDEFINED_ERROR = 127


def error(txid: bytes, code: int) -> bytes:
    return tlv.encode(TAG, tlv.encode(0xA1, tlv.encode(0x80, txid) + der.integer(0x02, code)))


def valid_fqdn(address: str) -> bool:
    return bool(address) and len(address) <= 255 and all(c.isprintable() and not c.isspace() for c in address)


def handle(ctx: Context, request: tlv.Tlv) -> bytes:
    parts = children(request, STEP)
    if [p.tag for p in parts[:5]] != [0x30, 0x5F37, 0x04, 0x30, 0xA0]:
        raise Es10Reject(SW_WRONG_DATA, STEP, "expected 30 serverSigned1, 5F37, 04, 30 certificate, A0 ctxParams1")
    signed1, signature1, ci_pkid, server_cert, ctx_params = parts[:5]
    try:
        f = der.fields(signed1, "serverSigned1")
        txid = f[0x80].value
        euicc_challenge = f[0x81].value
        address_tlv = f[0x83]
        server_challenge_tlv = f[0x84]
        address = der.decode_utf8(address_tlv.value, "serverAddress")
    except (KeyError, DecodeError) as exc:
        raise Es10Reject(SW_WRONG_DATA, STEP, f"serverSigned1 malformed: {exc}") from None
    if not 1 <= len(txid) <= 16 or len(server_challenge_tlv.value) != 16:
        raise Es10Reject(SW_WRONG_DATA, STEP, "transactionId or serverChallenge of the wrong size")
    try:  # ctxParamsForCommonAuthentication {[80 matchingId], A1 deviceInfo {80 tac, A1 capabilities, [82 imei]}}
        cp = der.fields(ctx_params, "ctxParams1")
        device = der.fields(cp[0xA1], "deviceInfo")
        if len(device[0x80].value) != 4 or 0xA1 not in device:
            raise DecodeError("deviceInfo", "needs 80 tac (4 bytes) and A1 deviceCapabilities")
        if 0x80 in cp:
            der.decode_utf8(cp[0x80].value, "matchingId")
    except (KeyError, DecodeError) as exc:
        raise Es10Reject(SW_WRONG_DATA, STEP, f"ctxParams1 malformed: {exc}") from None

    challenge = ctx.session.challenge
    ctx.session.challenge = None  # single use, whatever the outcome
    ctx.session.auth = None
    ctx.session.prepared = None
    ctx.session.bpp = None

    if ci_pkid.value not in ctx.identity.ci_pkids_for_signing():
        return error(txid, CI_PK_UNKNOWN)
    try:
        dpauth = ctx.identity.verify_server_certificate(server_cert.raw, ROLE_DP_AUTH)
    except CertificateCheckError as exc:
        return error(txid, UNSUPPORTED_CURVE if exc.kind == "curve" else INVALID_CERTIFICATE)
    smdp_oid = registered_oid(dpauth)
    if smdp_oid is None:
        return error(txid, INVALID_OID)
    if not crypto.is_valid_signature(dpauth, signed1.raw, signature1.value):
        return error(txid, INVALID_SIGNATURE)
    if challenge is None:
        return error(txid, NO_SESSION_CONTEXT)
    if euicc_challenge != challenge:
        return error(txid, EUICC_CHALLENGE_MISMATCH)
    if not valid_fqdn(address):
        return error(txid, UNDEFINED_ERROR)

    euicc_signed1 = tlv.encode(
        0x30, tlv.encode(0x80, txid) + address_tlv.raw + server_challenge_tlv.raw + euicc_info2(ctx) + ctx_params.raw
    )
    signature = ctx.identity.sign(euicc_signed1)
    ctx.session.auth = AuthSession(
        transaction_id=txid,
        server_address=address,
        server_challenge=server_challenge_tlv.value,
        dpauth=dpauth,
        smdp_oid=smdp_oid,
        euicc_signature1=signature,
        ci_pkid=ci_pkid.value,
    )
    ok = euicc_signed1 + tlv.encode(0x5F37, signature) + ctx.identity.euicc_cert_der + ctx.identity.eum_cert_der
    return tlv.encode(TAG, tlv.encode(0xA0, ok))
