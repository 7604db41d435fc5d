"""Hypothesis strategies generating valid values of any compiled ASN.1 type (test helper; needs ``hypothesis``).

``value_strategy("GetEimPackageResponse")`` walks the compiled asn1tools type tree together with its constraints
tree: SIZE constraints are honoured, CHOICEs pick any alternative, OPTIONAL members come and go, SEQUENCE OF has a
bounded length. ANY (e.g. the opaque tbsCertificate) becomes a random TLV. The values satisfy
``encode(t, v, strict=True)``, so they are what a correct peer could send.
"""

from __future__ import annotations

import datetime as _dt
from functools import cache

from hypothesis import strategies as st

from rsp.asn1 import resolve_type, specification
from rsp.asn1.jsonval import _STRINGS, _kind, _members

MAX_LIST = 3
MAX_FREE_SIZE = 24  # bytes/characters for an unconstrained OCTET STRING / string


def _bounds(cnode, default_max: int = MAX_FREE_SIZE) -> tuple[int, int]:
    """SIZE bounds from the constraints node, capped at ``default_max`` above the minimum."""
    lo = getattr(cnode, "minimum", "MIN")
    hi = getattr(cnode, "maximum", "MAX")
    lo = lo if isinstance(lo, int) else 0
    hi = hi if isinstance(hi, int) else lo + default_max
    return lo, min(hi, lo + default_max)


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    length = bytes([n]) if n < 0x80 else bytes([0x81, n]) if n < 0x100 else bytes([0x82, n >> 8, n & 0xFF])
    return bytes([tag]) + length + body


_ANY = st.one_of(
    st.binary(max_size=40).map(lambda b: _tlv(0x04, b)),  # OCTET STRING
    # an opaque SEQUENCE (e.g. tbsCertificate): constructed, so its content is TLVs, as DER requires
    st.lists(st.binary(max_size=12).map(lambda b: _tlv(0x04, b)), max_size=4).map(lambda p: _tlv(0x30, b"".join(p))),
    st.just(b"\x05\x00"),  # NULL (AlgorithmIdentifier parameters)
    st.just(bytes.fromhex("06082A8648CE3D030107")),  # prime256v1 OID
)

_OID = st.builds(
    lambda first, second, rest: ".".join(str(x) for x in [first, second, *rest]),
    st.integers(0, 2),
    st.integers(0, 39),
    st.lists(st.integers(0, 2**32), max_size=6),
)


def _bit_string(cnode):
    lo, hi = _bounds(cnode, 64)

    def build(bits: int, data: bytes) -> tuple[bytes, int]:
        nbytes = (bits + 7) // 8
        data = bytearray(data[:nbytes])
        if bits % 8:
            data[-1] &= (0xFF << (8 - bits % 8)) & 0xFF
        return bytes(data), bits

    return st.integers(lo, hi).flatmap(
        lambda bits: st.binary(min_size=(bits + 7) // 8, max_size=(bits + 7) // 8).map(lambda d: build(bits, d))
    )


def _strategy(node, cnode, depth: int):
    kind = _kind(node)
    if kind in ("ExplicitTag", "Recursive"):
        return _strategy(node.inner, cnode, depth)
    if kind in ("Sequence", "Set"):
        cmembers = {m.name: m for m in getattr(cnode, "members", [])}
        required: dict = {}
        optional: dict = {}
        for member in _members(node):
            strat = _strategy(member, cmembers.get(member.name), depth + 1)
            if member.optional or member.default is not None:
                optional[member.name] = strat
            else:
                required[member.name] = strat
        return st.fixed_dictionaries(required, optional=optional)
    if kind in ("SequenceOf", "SetOf"):
        lo, hi = _bounds(cnode, MAX_LIST if depth < 4 else 1)
        element = _strategy(node.element_type, getattr(cnode, "element_type", None), depth + 1)
        return st.lists(element, min_size=lo, max_size=hi)
    if kind == "Choice":
        cmembers = {m.name: m for m in getattr(cnode, "members", [])}
        return st.one_of(
            [_strategy(m, cmembers.get(m.name), depth + 1).map(lambda v, name=m.name: (name, v)) for m in node.members]
        )
    if kind == "OctetString":
        lo, hi = _bounds(cnode)
        return st.binary(min_size=lo, max_size=hi)
    if kind in ("Any", "AnyDefinedBy"):
        return _ANY
    if kind == "BitString":
        return _bit_string(cnode)
    if kind == "Integer":
        lo = getattr(cnode, "minimum", "MIN")
        hi = getattr(cnode, "maximum", "MAX")
        return st.integers(lo if isinstance(lo, int) else -(2**70), hi if isinstance(hi, int) else 2**70)
    if kind == "Boolean":
        return st.booleans()
    if kind == "Null":
        return st.none()
    if kind == "ObjectIdentifier":
        return _OID
    if kind in _STRINGS:
        lo, hi = _bounds(cnode)
        return st.text(min_size=lo, max_size=hi)
    if kind == "UTCTime":
        return st.datetimes(min_value=_dt.datetime(1950, 1, 1), max_value=_dt.datetime(2049, 12, 31)).map(
            lambda d: d.replace(microsecond=0)
        )
    if kind == "GeneralizedTime":
        return st.datetimes(min_value=_dt.datetime(1, 1, 1)).map(lambda d: d.replace(microsecond=0))
    raise NotImplementedError(f"no strategy for {kind}")


@cache
def value_strategy(type_name: str):
    """A strategy for valid values of ``type_name`` (spec name)."""
    compiled = specification().types[resolve_type(type_name)]
    return _strategy(compiled.type, compiled.constraints_checker._type, 0)
