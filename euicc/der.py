"""Small DER helpers for the eUICC's hand-built responses (X.690 §8, DER rules of §10-11).

Responses are assembled TLV by TLV (``rsp.tlv.encode``) so that every signed part is exactly the bytes that
were signed; these helpers encode and decode the primitive values inside them.
"""

from __future__ import annotations

from rsp import tlv
from rsp.errors import DecodeError


def int_bytes(value: int) -> bytes:
    """Minimal two's-complement content octets of an INTEGER."""
    length = max(1, (value + (value < 0)).bit_length() // 8 + 1)
    return value.to_bytes(length, "big", signed=True)


def integer(tag: int, value: int) -> bytes:
    return tlv.encode(tag, int_bytes(value))


def decode_int(content: bytes, what: str = "INTEGER") -> int:
    if not content:
        raise DecodeError(what, "empty INTEGER")
    if len(content) > 1 and (
        (content[0] == 0x00 and not content[1] & 0x80) or (content[0] == 0xFF and content[1] & 0x80)
    ):
        raise DecodeError(what, "INTEGER not minimally encoded")
    return int.from_bytes(content, "big", signed=True)


def boolean(tag: int, value: bool) -> bytes:
    return tlv.encode(tag, b"\xff" if value else b"\x00")


def decode_bool(content: bytes, what: str = "BOOLEAN") -> bool:
    if len(content) != 1:
        raise DecodeError(what, f"BOOLEAN of {len(content)} bytes")
    return content[0] != 0


def utf8(tag: int, text: str) -> bytes:
    return tlv.encode(tag, text.encode("utf-8"))


def decode_utf8(content: bytes, what: str = "UTF8String") -> str:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(what, f"not UTF-8: {exc.reason}") from None


def bit_string(tag: int, bits: set[int] | frozenset[int]) -> bytes:
    """A named-bit BIT STRING (bit 0 = most significant bit of the first octet), DER: no trailing zero bits."""
    if not bits:
        return tlv.encode(tag, b"\x00")
    nbits = max(bits) + 1
    nbytes = (nbits + 7) // 8
    buf = bytearray(nbytes)
    for b in bits:
        buf[b // 8] |= 0x80 >> (b % 8)
    return tlv.encode(tag, bytes([nbytes * 8 - nbits]) + bytes(buf))


def decode_bits(content: bytes, what: str = "BIT STRING") -> set[int]:
    """The set bit numbers of a BIT STRING's content octets."""
    if not content:
        raise DecodeError(what, "BIT STRING without its unused-bits octet")
    unused = content[0]
    if unused > 7 or (unused and len(content) == 1):
        raise DecodeError(what, f"bad unused-bits count {unused}")
    out: set[int] = set()
    body = content[1:]
    for i, byte in enumerate(body):
        for j in range(8):
            if byte & (0x80 >> j):
                out.add(i * 8 + j)
    total = len(body) * 8 - unused
    return {b for b in out if b < total}


def null(tag: int = 0x05) -> bytes:
    return tlv.encode(tag, b"")


def seq(tag: int, *parts: bytes) -> bytes:
    """A constructed TLV whose value is the concatenation of ``parts``."""
    return tlv.encode(tag, b"".join(parts))


def oid_bytes(dotted: str) -> bytes:
    """Content octets of an OBJECT IDENTIFIER."""
    arcs = [int(a) for a in dotted.split(".")]
    if len(arcs) < 2:
        raise ValueError(f"OID {dotted!r} needs at least two arcs")
    out = bytearray()
    for n in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [n & 0x7F]
        n >>= 7
        while n:
            chunk.append(0x80 | (n & 0x7F))
            n >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


def decode_oid(content: bytes, what: str = "OBJECT IDENTIFIER") -> str:
    if not content or content[-1] & 0x80:
        raise DecodeError(what, "truncated OBJECT IDENTIFIER")
    arcs: list[int] = []
    n = 0
    for b in content:
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(n)
            n = 0
    first = arcs[0]
    head = [0, first] if first < 40 else ([1, first - 40] if first < 80 else [2, first - 80])
    return ".".join(str(a) for a in head + arcs[1:])


def fields(node: tlv.Tlv, what: str) -> dict[int, tlv.Tlv]:
    """Children of a constructed TLV keyed by tag; a repeated tag is a decode error."""
    out: dict[int, tlv.Tlv] = {}
    for c in tlv.children(node, what=what):
        if c.tag in out:
            raise DecodeError(what, f"tag {c.tag:X} appears twice")
        out[c.tag] = c
    return out
