"""Helpers shared by the package kinds: parameter errors, ICCID/EID coding, DER integers, JSON views of values."""

from __future__ import annotations

import os
from typing import Any

from rsp import iccid as iccid_codec
from rsp import tlv


class ParamError(ValueError):
    """Operation parameters the eIM cannot turn into a package. ``field`` names the offending parameter."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}")


def new_transaction_id() -> bytes:
    """eimTransactionId: 16 random bytes (SGP.32 v1.2 TransactionId, SIZE(1..16))."""
    return os.urandom(16)


def der_integer(value: int) -> bytes:
    """Minimal two's-complement content octets of a DER INTEGER."""
    length = max(1, (value + (value < 0)).bit_length() // 8 + 1)
    return value.to_bytes(length, "big", signed=True)


def integer_tlv(tag: int, value: int) -> bytes:
    return tlv.encode(tag, der_integer(value))


def association_token_tlv(token: int | None) -> bytes:
    """``84 L associationToken`` appended to the signed data of eimSignature / euiccSignEPR / euiccSignEPE
    (protocol brief §3.3). No token known: nothing is appended."""
    return b"" if token is None else integer_tlv(0x84, token)


def eid_to_bytes(eid: str) -> bytes:
    return bytes.fromhex(eid)


def eid_from_bytes(data: bytes) -> str | None:
    """The EID as 32 decimal digits, or ``None`` when the 16 bytes are not that (then: invalidEid)."""
    if len(data) != 16:
        return None
    text = data.hex().upper()
    return text if text.isdigit() else None


def normalise_eid(eid: Any) -> str:
    """Check an operator-supplied EID: 32 decimal digits with valid check digits (GSMA SGP.29)."""
    from rsp.pki.certs import is_valid_eid

    if not isinstance(eid, str):
        raise ParamError("eid", "must be a string of 32 digits")
    text = eid.strip()
    if len(text) != 32 or not text.isdigit() or not text.isascii():
        raise ParamError("eid", f"must be 32 decimal digits, got {len(text)} characters")
    if not is_valid_eid(text):
        raise ParamError("eid", "check digits are wrong (int(EID) mod 97 must be 1)")
    return text


def iccid_to_bytes(iccid: Any, field: str = "iccid") -> bytes:
    """ICCID text (18..20 digits, optional trailing F) -> 10 bytes BCD, nibble-swapped as in EF.ICCID."""
    if not isinstance(iccid, str):
        raise ParamError(field, "must be a string of digits")
    digits = iccid.strip().upper().rstrip("F")
    if not (18 <= len(digits) <= 20) or not digits.isdigit() or not digits.isascii():
        raise ParamError(field, f"must be 18 to 20 decimal digits, got {iccid!r}")
    return iccid_codec.to_bcd(digits)


def iccid_from_bytes(data: bytes) -> str:
    return iccid_codec.from_bcd(data)


def bit_names(value: tuple[bytes, int] | None, names: list[str]) -> list[str]:
    """Named bits set in an asn1tools BIT STRING value."""
    if value is None:
        return []
    data, nbits = value
    out = []
    for i, name in enumerate(names):
        if i < nbits and data[i // 8] & (0x80 >> (i % 8)):
            out.append(name)
    return out


def to_json(value: Any) -> Any:
    """A JSON view of an asn1tools value: bytes -> upper-case hex, CHOICE -> {alternative: value}."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex().upper()
    if isinstance(value, tuple):
        if len(value) == 2 and isinstance(value[0], str):
            return {value[0]: to_json(value[1])}
        if len(value) == 2 and isinstance(value[0], bytes | bytearray) and isinstance(value[1], int):
            return {"bits": bytes(value[0]).hex().upper(), "length": value[1]}
        return [to_json(v) for v in value]
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def require_dict(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParamError(field, f"must be an object, got {type(value).__name__}")
    return value


def only_keys(d: dict[str, Any], allowed: set[str], field: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        allowed_text = ", ".join(sorted(allowed)) or "none"
        raise ParamError(field, f"unknown field(s) {', '.join(extra)} (allowed: {allowed_text})")


def text_param(d: dict[str, Any], key: str, field: str, *, required: bool, max_len: int = 255) -> str | None:
    v = d.get(key)
    if v is None:
        if required:
            raise ParamError(f"{field}.{key}", "is required")
        return None
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise ParamError(f"{field}.{key}", f"must be a non-empty string of at most {max_len} characters")
    return v


def bool_param(d: dict[str, Any], key: str, field: str) -> bool:
    v = d.get(key, False)
    if not isinstance(v, bool):
        raise ParamError(f"{field}.{key}", "must be true or false")
    return v
