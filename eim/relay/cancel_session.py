"""CancelSession relayed (SGP.32 v1.2 §5.14.5 ESipa.CancelSession -> SGP.22 v2.5 §5.6.5 ES9+.CancelSession).

ESipa in:  ``BF41 { 80 transactionId, A1 <CancelSessionResponse CHOICE alternative> }`` - the eUICC's
           ES10b.CancelSession response ``BF41 {..}`` with its tag replaced by the automatic ``[1]``
ES9+ out:  ``{transactionId (hex), cancelSessionResponse (b64 of the BF41 the eUICC produced)}``
ESipa out: ``BF41 { A0 {} }`` (cancelSessionOk) or ``BF41 { 81 code }``.

The relay rebuilds the eUICC's ``BF41`` from the ``A1`` content: only the outer tag changes, the signed
``euiccCancelSessionSigned`` inside is untouched. An IPA that sends ``A1 { BF41 .. }`` (the double tag some
ASN.1 compilers emit, protocol brief §9) is accepted too, by taking the inner BF41 as is. A compact
CancelSessionResponse (``A2`` inside) cannot be forwarded (undefinedError).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eim.relay.common import T, b64, esipa_error, request_children
from rsp import tlv
from rsp.errors import DecodeError

FUNCTION = "cancelSession"
TAG = 0xBF41

INVALID_TRANSACTION_ID = 1
EUICC_SIGNATURE_INVALID = 2
UNDEFINED_ERROR = 127

#: ES9+ (subjectCode, reasonCode) -> CancelSessionResponseEsipa error (docs/esipa-bindings.md).
ERRORS: dict[tuple[str, str], int] = {
    ("8.10.1", "3.9"): INVALID_TRANSACTION_ID,
    ("8.10.1", "2.1"): INVALID_TRANSACTION_ID,
    ("8.1", "6.1"): EUICC_SIGNATURE_INVALID,
}

OK = T(TAG, T(0xA0, b""))  # BF41 02 A0 00


@dataclass(frozen=True)
class Request:
    transaction_id: bytes
    cancel_session_response: bytes  # the eUICC's BF41 (ES10b form)


def parse_request(data: bytes) -> Request:
    what = "CancelSessionRequestEsipa"
    _, kids = request_children(data, TAG, what)
    if len(kids) != 2 or kids[0].tag != 0x80 or kids[1].tag != 0xA1:
        raise DecodeError(what, "must be 80 transactionId, A1 cancelSessionResponse")
    if not 1 <= kids[0].length <= 16:
        raise DecodeError(what, "transactionId must be 1..16 bytes")
    inner = tlv.children(kids[1], what=what)
    if len(inner) != 1:
        raise DecodeError(what, "cancelSessionResponse must hold exactly one alternative")
    if inner[0].tag == TAG:  # A1 { BF41 {..} }: already the eUICC's form
        response = inner[0].raw
    else:
        response = T(TAG, kids[1].value)
    return Request(kids[0].value, response)


def is_compact(cancel_session_response: bytes) -> bool:
    kids = tlv.children(cancel_session_response, what="CancelSessionResponse")
    return len(kids) == 1 and kids[0].tag == 0xA2


def es9_request(request: Request) -> dict[str, Any]:
    return {
        "transactionId": request.transaction_id.hex().upper(),
        "cancelSessionResponse": b64(request.cancel_session_response),
    }


def error_response(code: int) -> bytes:
    return esipa_error(TAG, 0x81, code)
