"""DER primitives the IPA's parsers and builders share (INTEGER, UTF8String, named-bit BIT STRING, ICCID, a
constructed TLV's children by tag), over :mod:`rsp.tlv`. Kept apart from :mod:`ipa.messages` so that the ES10 client
(:mod:`ipa.es10`) loads without every ESipa message class: ``ipa chip info`` never needs them.
"""

from __future__ import annotations

from rsp import iccid as iccid_codec
from rsp import tlv
from rsp.errors import DecodeError

TAG_EID = 0x5A


def int_value(n: int) -> bytes:
    """DER minimal two's-complement INTEGER contents."""
    length = max(1, (n + (n < 0)).bit_length() // 8 + 1)
    return n.to_bytes(length, "big", signed=True)


def enc_int(tag: int, n: int) -> bytes:
    return tlv.encode(tag, int_value(n))


def dec_int(value: bytes, what: str = "INTEGER") -> int:
    if not value:
        raise DecodeError(what, "empty INTEGER")
    if len(value) > 8:
        raise DecodeError(what, f"INTEGER of {len(value)} bytes too large")
    return int.from_bytes(value, "big", signed=True)


def dec_utf8(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(what, f"invalid UTF-8: {exc.reason}", exc.start) from None


def enc_bitstring(tag: int, bits: list[int] | set[int]) -> bytes:
    """Named-bit BIT STRING, DER (no trailing zero bits)."""
    if not bits:
        return tlv.encode(tag, b"\x00")
    top = max(bits)
    nbytes = top // 8 + 1
    buf = bytearray(nbytes)
    for b in bits:
        buf[b // 8] |= 0x80 >> (b % 8)
    unused = 7 - (top % 8)
    return tlv.encode(tag, bytes([unused]) + bytes(buf))


def dec_bitstring(value: bytes, what: str = "BIT STRING") -> set[int]:
    if not value:
        raise DecodeError(what, "empty BIT STRING")
    unused = value[0]
    if unused > 7 or (unused and len(value) == 1):
        raise DecodeError(what, f"{unused} unused bits")
    bits = set()
    nbits = (len(value) - 1) * 8 - unused
    for i in range(nbits):
        if value[1 + i // 8] & (0x80 >> (i % 8)):
            bits.add(i)
    return bits


def child_map(t: tlv.Tlv, what: str) -> dict[int, tlv.Tlv]:
    """Children of a constructed TLV by tag (first occurrence wins)."""
    out: dict[int, tlv.Tlv] = {}
    for c in tlv.children(t, what=what):
        out.setdefault(c.tag, c)
    return out


def expect(data: bytes, tag: int, what: str) -> tlv.Tlv:
    t = tlv.parse_exact(data, what=what)
    if t.tag != tag:
        raise DecodeError(what, f"expected tag {tag:X}, got {t.tag:X}", 0)
    return t


def iccid_to_str(value: bytes) -> str:
    """ICCID from its 10-byte BCD nibble-swapped form (trailing F removed)."""
    return iccid_codec.from_bcd(value)


def iccid_to_bytes(text: str) -> bytes:
    if not text.isalnum():
        raise ValueError(f"bad ICCID {text!r}")
    return iccid_codec.to_bcd(text)
