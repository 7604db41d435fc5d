"""GetBoundProfilePackage relayed (SGP.32 v1.2 §5.14.3 ESipa.GetBoundProfilePackage -> SGP.22 v2.5 §5.6.2
ES9+.GetBoundProfilePackage).

ESipa in:  ``BF3A { 80 transactionId, BF21 prepareDownloadResponse }`` (BF21 forwarded verbatim)
ES9+ out:  ``{transactionId (hex), prepareDownloadResponse (b64 BF21)}``
ES9+ in:   ``{transactionId, boundProfilePackage (b64 BF36)}``
ESipa out: ``BF3A { A0 { 80 transactionId, BF36 boundProfilePackage } }`` or ``BF3A { 81 code }``.

A compact PrepareDownloadResponse (``A2``, ``minimizeEsipaBytes``) cannot be forwarded (undefinedError).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eim.relay.common import T, b64, esipa_error, request_children, tlv_field, transaction_id
from rsp import tlv
from rsp.errors import DecodeError

FUNCTION = "getBoundProfilePackage"
TAG = 0xBF3A

EUICC_SIGNATURE_INVALID = 1
CONFIRMATION_CODE_MISSING = 2
CONFIRMATION_CODE_REFUSED = 3
CONFIRMATION_CODE_RETRIES_EXCEEDED = 4
BPP_REBINDING_REFUSED = 5
DOWNLOAD_ORDER_EXPIRED = 6
METADATA_MISMATCH = 50
INVALID_TRANSACTION_ID = 95
UNDEFINED_ERROR = 127

#: ES9+ (subjectCode, reasonCode) -> GetBoundProfilePackageResponseEsipa error (docs/esipa-bindings.md).
ERRORS: dict[tuple[str, str], int] = {
    ("8.1", "6.1"): EUICC_SIGNATURE_INVALID,
    ("8.2.7", "2.2"): CONFIRMATION_CODE_MISSING,
    ("8.2.7", "3.8"): CONFIRMATION_CODE_REFUSED,
    ("8.2.7", "6.4"): CONFIRMATION_CODE_RETRIES_EXCEEDED,
    ("8.2", "1.2"): BPP_REBINDING_REFUSED,
    ("8.8.5", "4.10"): DOWNLOAD_ORDER_EXPIRED,
    ("8.10.1", "3.9"): INVALID_TRANSACTION_ID,
    ("8.10.1", "2.1"): INVALID_TRANSACTION_ID,
}


@dataclass(frozen=True)
class Request:
    transaction_id: bytes
    prepare_download_response: bytes  # BF21 verbatim


def parse_request(data: bytes) -> Request:
    what = "GetBoundProfilePackageRequestEsipa"
    _, kids = request_children(data, TAG, what)
    if len(kids) != 2 or kids[0].tag != 0x80 or kids[1].tag != 0xBF21:
        raise DecodeError(what, "must be 80 transactionId, BF21 prepareDownloadResponse")
    if not 1 <= kids[0].length <= 16:
        raise DecodeError(what, "transactionId must be 1..16 bytes")
    return Request(kids[0].value, kids[1].raw)


def is_compact(prepare_download_response: bytes) -> bool:
    kids = tlv.children(prepare_download_response, what="PrepareDownloadResponse")
    return len(kids) == 1 and kids[0].tag == 0xA2


def es9_request(request: Request) -> dict[str, Any]:
    return {
        "transactionId": request.transaction_id.hex().upper(),
        "prepareDownloadResponse": b64(request.prepare_download_response),
    }


@dataclass(frozen=True)
class Answer:
    transaction_id: bytes
    bound_profile_package: bytes  # BF36 verbatim


def parse_answer(answer: dict[str, Any]) -> Answer:
    txid = transaction_id(FUNCTION, answer)
    bpp = tlv_field(FUNCTION, answer, "boundProfilePackage", 0xBF36)
    assert bpp is not None
    return Answer(txid, bpp)


def ok_response(a: Answer) -> bytes:
    return T(TAG, T(0xA0, T(0x80, a.transaction_id) + a.bound_profile_package))


def error_response(code: int) -> bytes:
    return esipa_error(TAG, 0x81, code)
