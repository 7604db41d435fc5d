"""AuthenticateClient relayed (SGP.32 v1.2 §5.14.2 ESipa.AuthenticateClient -> SGP.22 v2.5 §5.6.3
ES9+.AuthenticateClient).

ESipa in:  ``BF3B { 80 transactionId, BF38 authenticateServerResponse }`` (BF38 forwarded verbatim)
ES9+ out:  ``{transactionId (hex), authenticateServerResponse (b64 BF38)}``
ES9+ in:   ``{transactionId, profileMetadata (BF25), smdpSigned2 (30), smdpSignature2 (5F37 TLV),
           smdpCertificate (30)}``
ESipa out: ``BF3B { A0 { 80 txid, BF25 metadata, 30 smdpSigned2, 5F37 <sig value>, 30 cert } }`` or
           ``BF3B { 82 code }``.

The eUICC's certificates are cut from the BF38 as received (:func:`certificates`), to be stored once the SM-DP+
has accepted them. A compact AuthenticateServerResponse (``minimizeEsipaBytes``) cannot be forwarded: the eIM
would have to rebuild euiccSigned1, which it does not do (undefinedError).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eim.relay.common import T, b64, esipa_error, request_children, tlv_field, tlv_value, transaction_id
from rsp import tlv
from rsp.errors import DecodeError

FUNCTION = "authenticateClient"
TAG = 0xBF3B

EUM_CERTIFICATE_INVALID = 1
EUM_CERTIFICATE_EXPIRED = 2
EUICC_CERTIFICATE_INVALID = 3
EUICC_CERTIFICATE_EXPIRED = 4
EUICC_SIGNATURE_INVALID = 5
MATCHING_ID_REFUSED = 6
EID_MISMATCH = 7
NO_ELIGIBLE_PROFILE = 8
CI_PK_UNKNOWN = 9
INVALID_TRANSACTION_ID = 10
INSUFFICIENT_MEMORY = 11
PPR_NOT_ALLOWED = 50
EVENT_ID_UNKNOWN = 56
UNDEFINED_ERROR = 127

#: ES9+ (subjectCode, reasonCode) -> AuthenticateClientResponseEsipa error (docs/esipa-bindings.md).
ERRORS: dict[tuple[str, str], int] = {
    ("8.1.2", "6.1"): EUM_CERTIFICATE_INVALID,
    ("8.1.2", "6.3"): EUM_CERTIFICATE_EXPIRED,
    ("8.1.3", "6.1"): EUICC_CERTIFICATE_INVALID,
    ("8.1.3", "6.3"): EUICC_CERTIFICATE_EXPIRED,
    ("8.1", "6.1"): EUICC_SIGNATURE_INVALID,
    ("8.2.6", "3.8"): MATCHING_ID_REFUSED,
    ("8.1.1", "3.8"): EID_MISMATCH,
    ("8.2.5", "4.3"): NO_ELIGIBLE_PROFILE,
    ("8.11.1", "3.9"): CI_PK_UNKNOWN,
    ("8.10.1", "3.9"): INVALID_TRANSACTION_ID,
    ("8.10.1", "2.1"): INVALID_TRANSACTION_ID,
}


@dataclass(frozen=True)
class Request:
    transaction_id: bytes
    authenticate_server_response: bytes  # BF38 verbatim


def parse_request(data: bytes) -> Request:
    what = "AuthenticateClientRequestEsipa"
    _, kids = request_children(data, TAG, what)
    if len(kids) != 2 or kids[0].tag != 0x80 or kids[1].tag != 0xBF38:
        raise DecodeError(what, "must be 80 transactionId, BF38 authenticateServerResponse")
    if not 1 <= kids[0].length <= 16:
        raise DecodeError(what, "transactionId must be 1..16 bytes")
    return Request(kids[0].value, kids[1].raw)


def is_compact(authenticate_server_response: bytes) -> bool:
    """True for compactAuthenticateResponseOk (the third CHOICE alternative, A2)."""
    kids = tlv.children(authenticate_server_response, what="AuthenticateServerResponse")
    return len(kids) == 1 and kids[0].tag == 0xA2


def certificates(authenticate_server_response: bytes) -> tuple[bytes, bytes] | None:
    """(CERT.EUICC, CERT.EUM) as received in authenticateResponseOk, or ``None`` (error / compact / malformed)."""
    try:
        kids = tlv.children(authenticate_server_response, what="AuthenticateServerResponse")
        if len(kids) != 1 or kids[0].tag != 0xA0:
            return None
        parts = tlv.children(kids[0], what="AuthenticateResponseOk")
    except DecodeError:
        return None
    if len(parts) < 4 or [p.tag for p in parts[:4]] != [0x30, 0x5F37, 0x30, 0x30]:
        return None
    return parts[2].raw, parts[3].raw


def es9_request(request: Request) -> dict[str, Any]:
    return {
        "transactionId": request.transaction_id.hex().upper(),
        "authenticateServerResponse": b64(request.authenticate_server_response),
    }


@dataclass(frozen=True)
class Answer:
    transaction_id: bytes
    profile_metadata: bytes | None  # BF25 verbatim
    smdp_signed2: bytes  # 30.. verbatim
    smdp_signature2: bytes  # value, 5F37 stripped
    smdp_certificate: bytes  # 30.. verbatim


def parse_answer(answer: dict[str, Any]) -> Answer:
    f = FUNCTION
    txid = transaction_id(f, answer)
    metadata = tlv_field(f, answer, "profileMetadata", 0xBF25, optional=True)
    signed2 = tlv_field(f, answer, "smdpSigned2", 0x30)
    sig2 = tlv_value(f, answer, "smdpSignature2", 0x5F37, raw_length=64)
    cert = tlv_field(f, answer, "smdpCertificate", 0x30)
    assert signed2 is not None and cert is not None
    return Answer(txid, metadata, signed2, sig2, cert)


def ok_response(a: Answer) -> bytes:
    body = T(0x80, a.transaction_id) + (a.profile_metadata or b"") + a.smdp_signed2
    body += T(0x5F37, a.smdp_signature2) + a.smdp_certificate
    return T(TAG, T(0xA0, body))


def error_response(code: int) -> bytes:
    return esipa_error(TAG, 0x82, code)
