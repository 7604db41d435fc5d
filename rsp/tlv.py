"""BER-TLV helpers (ISO/IEC 8825-1): walk received bytes and cut out exact sub-TLVs.

Signed data is never re-encoded: callers use :func:`find` / :func:`children` to take the signed part
from the bytes as received (SGP.22 §5.5, SGP.32 §2.6 signature inputs).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from rsp.errors import DecodeError


@dataclass(frozen=True, slots=True)
class Tlv:
    """One TLV found in a buffer. ``raw`` is the full TLV exactly as received."""

    tag: int
    offset: int  # offset of the tag byte in the buffer walked
    header_len: int
    length: int
    raw: bytes

    @property
    def value(self) -> bytes:
        return self.raw[self.header_len :]

    @property
    def constructed(self) -> bool:
        return bool(tag_first_byte(self.tag) & 0x20)


def tag_first_byte(tag: int) -> int:
    n = tag
    while n > 0xFF:
        n >>= 8
    return n


def tag_bytes(tag: int) -> bytes:
    """The tag number as its on-the-wire bytes (0xBF51 -> b'\\xbf\\x51')."""
    if tag < 0:
        raise ValueError("negative tag")
    length = max(1, (tag.bit_length() + 7) // 8)
    return tag.to_bytes(length, "big")


def encode_length(n: int) -> bytes:
    """DER definite length."""
    if n < 0:
        raise ValueError("negative length")
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def encode(tag: int, value: bytes) -> bytes:
    """Build one TLV."""
    return tag_bytes(tag) + encode_length(len(value)) + value


def read_header(data: bytes, offset: int = 0, *, what: str = "TLV", end: int | None = None) -> tuple[int, int, int]:
    """Parse the tag and length at ``offset``. Returns ``(tag, header_len, length)``.

    ``end`` bounds the TLV (default: the end of ``data``). Raises :class:`DecodeError` for truncated or
    indefinite/over-long lengths; positions are offsets into ``data``.
    """
    n = len(data) if end is None else end
    if offset >= n:
        raise DecodeError(what, "no tag (data ended)", offset)
    pos = offset
    first = data[pos]
    tag = first
    pos += 1
    if first & 0x1F == 0x1F:
        while True:
            if pos >= n:
                raise DecodeError(what, "tag truncated", offset)
            b = data[pos]
            tag = (tag << 8) | b
            pos += 1
            if not b & 0x80:
                break
            if pos - offset > 4:
                raise DecodeError(what, "tag longer than 4 bytes", offset)
    if pos >= n:
        raise DecodeError(what, "length missing", pos)
    lb = data[pos]
    pos += 1
    if lb < 0x80:
        length = lb
    elif lb == 0x80:
        raise DecodeError(what, "indefinite length not allowed in DER", pos - 1)
    else:
        cnt = lb & 0x7F
        if cnt > 4:
            raise DecodeError(what, f"length field of {cnt} bytes too long", pos - 1)
        if pos + cnt > n:
            raise DecodeError(what, "length field truncated", pos - 1)
        length = int.from_bytes(data[pos : pos + cnt], "big")
        pos += cnt
    if pos + length > n:
        raise DecodeError(what, f"value of {length} bytes runs past the end ({n - pos} left)", pos)
    return tag, pos - offset, length


def parse_one(data: bytes, offset: int = 0, *, what: str = "TLV") -> Tlv:
    tag, hl, length = read_header(data, offset, what=what)
    return Tlv(tag, offset, hl, length, bytes(data[offset : offset + hl + length]))


def parse_exact(data: bytes, *, what: str = "TLV") -> Tlv:
    """Parse a buffer that must hold exactly one TLV."""
    t = parse_one(data, 0, what=what)
    if len(t.raw) != len(data):
        raise DecodeError(what, f"{len(data) - len(t.raw)} trailing bytes after the TLV", len(t.raw))
    return t


def iter_tlvs(data: bytes, *, what: str = "TLV") -> Iterator[Tlv]:
    """Iterate over the concatenated TLVs in ``data`` (one level)."""
    offset = 0
    while offset < len(data):
        t = parse_one(data, offset, what=what)
        yield t
        offset += len(t.raw)


def children(tlv: Tlv | bytes, *, what: str = "TLV") -> list[Tlv]:
    """The TLVs directly inside a constructed TLV (offsets relative to its value)."""
    if isinstance(tlv, bytes | bytearray):
        tlv = parse_exact(bytes(tlv), what=what)
    return list(iter_tlvs(tlv.value, what=what))


def find(data: Tlv | bytes, *path: int, what: str = "TLV") -> Tlv | None:
    """Follow ``path`` of tags from the outer TLV ``data`` (whose own tag is not part of the path).

    ``find(bf51_bytes, 0xA0, 0x30)`` returns the raw ``30..`` inside ``A0`` inside BF51, or ``None``.
    """
    node = parse_exact(bytes(data), what=what) if isinstance(data, bytes | bytearray) else data
    for tag in path:
        for c in children(node, what=what):
            if c.tag == tag:
                node = c
                break
        else:
            return None
    return node


def require(data: Tlv | bytes, *path: int, what: str = "TLV") -> Tlv:
    """Like :func:`find` but raise :class:`DecodeError` naming the missing tag."""
    found = find(data, *path, what=what)
    if found is None:
        raise DecodeError(what, "missing " + "/".join(f"{t:02X}" for t in path))
    return found


MAX_DEPTH = 32


def check_structure(data: bytes, offset: int = 0, *, what: str = "TLV", max_depth: int = MAX_DEPTH) -> Tlv:
    """Check that the TLV at ``offset`` is well formed all the way down and return it.

    Every constructed TLV must hold exactly a sequence of TLVs that ends where it ends (definite DER lengths),
    at most ``max_depth`` levels deep. Cheap (one walk over the buffer, no copies); run before handing untrusted
    bytes to a schema decoder, which may misbehave on a nested length that overruns its parent. Errors give the
    absolute byte position and the path of tags to the faulty TLV.
    """
    top = parse_one(data, offset, what=what)
    # (start of contents, end of contents, tag, path of tags)
    stack: list[tuple[int, int, int, tuple[int, ...]]] = [(offset + top.header_len, offset + len(top.raw), top.tag, ())]
    while stack:
        start, end, tag, path = stack.pop()
        if not tag_first_byte(tag) & 0x20 or start == end:
            continue
        path = (*path, tag)
        if len(path) > max_depth:
            raise DecodeError(what, f"nested deeper than {max_depth} levels", start)
        pos = start
        while pos < end:
            try:
                ctag, hl, length = read_header(data, pos, what=what, end=end)
            except DecodeError as exc:
                where = "/".join(f"{t:X}" for t in path)
                raise DecodeError(what, f"inside {where}: {exc.reason}", exc.position) from None
            stack.append((pos + hl, pos + hl + length, ctag, path))
            pos += hl + length
    return top


def parse_tag_list(value: bytes, *, what: str = "tagList") -> tuple[int, ...]:
    """The tags in a tagList (``5C``) value: concatenated tag fields without lengths (SGP.22 GetEuiccData,
    ProfileInfoListRequest, IpaEuiccDataRequest). Multi-byte tags up to 3 bytes."""
    tags = []
    pos = 0
    while pos < len(value):
        start = pos
        first = value[pos]
        pos += 1
        if first & 0x1F == 0x1F:
            while True:
                if pos >= len(value):
                    raise DecodeError(what, "tag truncated", start)
                b = value[pos]
                pos += 1
                if not b & 0x80:
                    break
                if pos - start > 3:
                    raise DecodeError(what, "tag longer than 3 bytes", start)
        tags.append(int.from_bytes(value[start:pos], "big"))
    return tuple(tags)
