"""What the relay's function modules share: base64 fields, the TLV-vs-value mapping, ESipa error answers.

The TLV-vs-value trap (protocol brief §6): in ES9+ JSON, ``serverSignature1`` / ``smdpSignature2`` are base64 of
the whole ``5F37 40 <sig>`` TLV and ``euiccCiPKIdToBeUsed`` of the whole ``04 14 <keyid>`` TLV; in the ESipa
ASN.1 the same fields are OCTET STRING *values* of the enclosing SEQUENCE, so the relay strips the TLV header
(:func:`tlv_value`) and writes the value under the ESipa field's own tag. Structured fields (``serverSigned1``,
certificates, ``profileMetadata``, the bound profile package) are TLVs on both sides and are copied verbatim:
signed data is never re-encoded.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from eim.relay.errors import Es9BadResponse, Es9Failed, Es9Unreachable, InvalidSmdpAddress, RelayError
from rsp import tlv
from rsp.errors import DecodeError

UNDEFINED_ERROR = 127

T = tlv.encode


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(function: str, answer: dict[str, Any], name: str, *, optional: bool = False) -> bytes | None:
    """Field ``name`` of an ES9+ answer as bytes; :class:`Es9BadResponse` when missing or not base64."""
    value = answer.get(name)
    if value is None:
        if optional:
            return None
        raise Es9BadResponse(function, f"answer lacks {name}")
    if not isinstance(value, str):
        raise Es9BadResponse(function, f"{name} is not a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise Es9BadResponse(function, f"{name} is not valid base64") from None


def tlv_field(function: str, answer: dict[str, Any], name: str, tag: int, *, optional: bool = False) -> bytes | None:
    """A structured field (one whole TLV with ``tag``) from an ES9+ answer, verbatim."""
    data = unb64(function, answer, name, optional=optional)
    if data is None:
        return None
    try:
        t = tlv.parse_exact(data, what=name)
    except DecodeError as exc:
        raise Es9BadResponse(function, f"{name}: {exc}") from None
    if t.tag != tag:
        raise Es9BadResponse(function, f"{name} has tag {t.tag:X}, expected {tag:X}")
    return data


def tlv_value(function: str, answer: dict[str, Any], name: str, tag: int, *, raw_length: int | None = None) -> bytes:
    """The *value* of a field that ES9+ carries as a whole TLV with ``tag`` (``5F37`` signature, ``04`` key id).

    Tolerates a server that sends the bare value instead (then ``raw_length``, if given, must match).
    """
    data = unb64(function, answer, name)
    assert data is not None
    try:
        t: tlv.Tlv | None = tlv.parse_exact(data, what=name)
    except DecodeError:
        t = None
    if t is not None and t.tag == tag:
        return t.value
    if raw_length is not None and len(data) == raw_length:
        return data
    raise Es9BadResponse(function, f"{name} is neither a {tag:X} TLV nor a bare value")


def transaction_id(function: str, answer: dict[str, Any]) -> bytes:
    """ES9+ ``transactionId`` (hex string, 1..16 bytes) -> the ESipa OCTET STRING value."""
    value = answer.get("transactionId")
    if not isinstance(value, str) or not 2 <= len(value) <= 32 or len(value) % 2:
        raise Es9BadResponse(function, "transactionId must be 1..16 bytes of hex")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise Es9BadResponse(function, "transactionId is not hex") from None


def der_integer(value: int) -> bytes:
    """Minimal two's-complement content octets of an INTEGER."""
    length = max(1, (value.bit_length() + 8) // 8)
    return value.to_bytes(length, "big", signed=True)


def esipa_error(outer_tag: int, error_tag: int, code: int) -> bytes:
    """``<outer> { <error_tag> INTEGER code }``, e.g. ``BF39 03 81 01 01`` = invalidDpAddress."""
    return T(outer_tag, T(error_tag, der_integer(code)))


def error_code(exc: RelayError, table: dict[tuple[str, str], int], *, tls_code: int = UNDEFINED_ERROR) -> int:
    """The ESipa error code for a failed ES9+ step.

    ``Es9Failed`` -> ``table[(subjectCode, reasonCode)]`` (or undefinedError); a TLS/certificate failure or an
    invalid address -> ``tls_code`` (invalidDpAddress where the function has it); anything else (unreachable,
    malformed answer) -> undefinedError(127).
    """
    if isinstance(exc, Es9Failed):
        return table.get((exc.subject_code, exc.reason_code), UNDEFINED_ERROR)
    if isinstance(exc, InvalidSmdpAddress):
        return tls_code
    if isinstance(exc, Es9Unreachable) and exc.tls:
        return tls_code
    return UNDEFINED_ERROR


def request_children(data: bytes, tag: int, what: str) -> tuple[tlv.Tlv, list[tlv.Tlv]]:
    """Parse an ESipa request that must be one TLV with ``tag``; return it and its children."""
    top = tlv.parse_exact(data, what=what)
    if top.tag != tag:
        raise DecodeError(what, f"expected tag {tag:X}, got {top.tag:X}", 0)
    return top, tlv.children(top, what=what)


__all__ = [
    "UNDEFINED_ERROR",
    "Es9BadResponse",
    "b64",
    "der_integer",
    "error_code",
    "esipa_error",
    "request_children",
    "tlv_field",
    "tlv_value",
    "transaction_id",
    "unb64",
]
