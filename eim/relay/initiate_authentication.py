"""InitiateAuthentication relayed (SGP.32 v1.2 §5.14.1 ESipa.InitiateAuthentication -> SGP.22 v2.5 §5.6.1
ES9+.InitiateAuthentication).

ESipa in:  ``BF39 { 81 euiccChallenge, [83 smdpAddress], [BF20 euiccInfo1], [82 eimTransactionId] }``
ES9+ out:  ``{euiccChallenge, euiccInfo1, smdpAddress}``
ES9+ in:   ``{transactionId (hex), serverSigned1, serverSignature1 (5F37 TLV), euiccCiPKIdToBeUsed (04 TLV),
           serverCertificate}``
ESipa out: ``BF39 { A0 { 80 transactionId, 30 serverSigned1, 5F37 <sig value>, 04 <key id value>, 30 cert,
           [0C matchingId] } }`` (matchingId when the IPA sent no SM-DP+ address: the eIM holds the download data)
           or ``BF39 { 81 code }``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eim.relay.common import T, b64, esipa_error, request_children, tlv_field, tlv_value, transaction_id
from rsp.errors import DecodeError

FUNCTION = "initiateAuthentication"
TAG = 0xBF39

INVALID_DP_ADDRESS = 1
EUICC_VERSION_NOT_SUPPORTED_BY_DP = 2
CI_PKID_NOT_SUPPORTED = 3
SMDP_ADDRESS_MISMATCH = 50
SMDP_OID_MISMATCH = 51
INVALID_EIM_TRANSACTION_ID = 52
UNDEFINED_ERROR = 127

#: ES9+ (subjectCode, reasonCode) -> InitiateAuthenticationResponseEsipa error (docs/esipa-bindings.md).
ERRORS: dict[tuple[str, str], int] = {
    ("8.8.1", "3.8"): INVALID_DP_ADDRESS,  # Invalid SM-DP+ Address
    ("8.8.2", "3.1"): CI_PKID_NOT_SUPPORTED,  # none of the proposed CI key ids supported
    ("8.8.3", "3.1"): EUICC_VERSION_NOT_SUPPORTED_BY_DP,  # the eUICC's SVN is not supported
    ("8.8.4", "3.7"): CI_PKID_NOT_SUPPORTED,  # no CERT.DPauth chaining to a CI the eUICC supports
}


@dataclass(frozen=True)
class Request:
    euicc_challenge: bytes
    smdp_address: str | None
    euicc_info1: bytes | None  # the whole BF20 TLV as received
    eim_transaction_id: bytes | None


def parse_request(data: bytes) -> Request:
    what = "InitiateAuthenticationRequestEsipa"
    _, kids = request_children(data, TAG, what)
    fields = {}
    for c in kids:
        if c.tag in fields:
            raise DecodeError(what, f"field {c.tag:X} repeated")
        fields[c.tag] = c
    challenge = fields.get(0x81)
    if challenge is None or challenge.length != 16:
        raise DecodeError(what, "euiccChallenge (81, 16 bytes) missing or of the wrong size")
    address = None
    if 0x83 in fields:
        try:
            address = fields[0x83].value.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError(what, "smdpAddress is not UTF-8") from None
    eim_tx = fields[0x82].value if 0x82 in fields else None
    if eim_tx is not None and not 1 <= len(eim_tx) <= 16:
        raise DecodeError(what, "eimTransactionId must be 1..16 bytes")
    info1 = fields[0xBF20].raw if 0xBF20 in fields else None
    return Request(challenge.value, address, info1, eim_tx)


def es9_request(request: Request, euicc_info1: bytes, address: str) -> dict[str, Any]:
    return {"euiccChallenge": b64(request.euicc_challenge), "euiccInfo1": b64(euicc_info1), "smdpAddress": address}


@dataclass(frozen=True)
class Answer:
    transaction_id: bytes
    server_signed1: bytes  # 30.. verbatim
    server_signature1: bytes  # value (64 bytes), 5F37 header stripped
    ci_pkid: bytes  # value, 04 header stripped
    server_certificate: bytes  # 30.. verbatim


def parse_answer(answer: dict[str, Any]) -> Answer:
    f = FUNCTION
    txid = transaction_id(f, answer)
    signed1 = tlv_field(f, answer, "serverSigned1", 0x30)
    sig = tlv_value(f, answer, "serverSignature1", 0x5F37, raw_length=64)
    pkid = tlv_value(f, answer, "euiccCiPKIdToBeUsed", 0x04, raw_length=20)
    cert = tlv_field(f, answer, "serverCertificate", 0x30)
    assert signed1 is not None and cert is not None
    return Answer(txid, signed1, sig, pkid, cert)


def ok_response(a: Answer, matching_id: str | None = None) -> bytes:
    """InitiateAuthenticationOkEsipa. ``matching_id`` is supplied by the eIM when it handles the download data
    itself (the IPA came without an activation code: eimDownloadDataHandling), so the IPA can build ctxParams1."""
    body = T(0x80, a.transaction_id) + a.server_signed1 + T(0x5F37, a.server_signature1) + T(0x04, a.ci_pkid)
    body += a.server_certificate
    if matching_id:
        body += T(0x0C, matching_id.encode("utf-8"))
    return T(TAG, T(0xA0, body))


def error_response(code: int) -> bytes:
    return esipa_error(TAG, 0x81, code)
