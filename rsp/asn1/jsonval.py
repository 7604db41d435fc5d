"""JSON form of decoded values (used by the `rsp` CLI), and its exact inverse.

The conversion is driven by the compiled type tree, so the JSON carries no type annotations of its own:

=====================  ==========================================  ===========================================
ASN.1                  Python value (asn1tools)                    JSON
=====================  ==========================================  ===========================================
SEQUENCE / SET         dict (absent OPTIONAL = key missing)        object with the same keys
SEQUENCE OF / SET OF   list                                        array
CHOICE                 ``(alternative, value)``                    ``{"alternative": value}`` (one key)
unknown alternative    ``(None, raw_tlv_bytes)``                   ``{"_unknown": "HEX"}``
OCTET STRING, ANY      bytes                                       ``"HEX"`` (upper case; input any case)
BIT STRING             ``(bytes, number_of_bits)``                 ``{"hex": "HEX", "bits": n}``
INTEGER                int                                         number
BOOLEAN                bool                                        true / false
NULL                   None                                        null
OBJECT IDENTIFIER      ``"1.2.840.10045.2.1"``                     the same string
UTF8String etc.        str                                         string
UTCTime etc.           datetime                                    ISO 8601 string
=====================  ==========================================  ===========================================

``from_json(t, to_json(t, v)) == v`` for every value ``v`` that :func:`rsp.asn1.decode` returns.
"""

from __future__ import annotations

import datetime as _dt

from rsp.asn1 import resolve_type, specification
from rsp.errors import EncodeError

UNKNOWN_KEY = "_unknown"

_STRINGS = {
    "UTF8String",
    "NumericString",
    "PrintableString",
    "IA5String",
    "VisibleString",
    "GeneralString",
    "BMPString",
    "UniversalString",
    "GraphicString",
    "TeletexString",
    "ObjectDescriptor",
}
_TIMES = {"UTCTime", "GeneralizedTime", "Date", "TimeOfDay", "DateTime"}


# our patched asn1tools node classes (rsp.asn1._compiled) -> the asn1tools kind they stand for
_PATCHED = {
    "PreservingChoice": "Choice",
    "SafeSequenceOf": "SequenceOf",
    "SafeSetOf": "SetOf",
    "CorrectObjectIdentifier": "ObjectIdentifier",
    "CheckedBitString": "BitString",
}


class _Bad(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or '<top>'}: {message}")


def _kind(node) -> str:
    name = type(node).__name__
    return _PATCHED.get(name, name)


def _members(node) -> list:
    members = list(getattr(node, "root_members", None) or [])
    additions = getattr(node, "additions", None)
    if isinstance(additions, list):
        for addition in additions:
            members.extend(addition if isinstance(addition, list) else [addition])
    if not members:
        members = list(getattr(node, "members", None) or [])
    return members


def _hex(data: bytes) -> str:
    return bytes(data).hex().upper()


def _unhex(obj, path: str) -> bytes:
    if not isinstance(obj, str):
        raise _Bad(path, f"expected a hex string, got {type(obj).__name__}")
    try:
        return bytes.fromhex(obj)
    except ValueError:
        raise _Bad(path, f"not a hex string: {obj[:40]!r}") from None


def _to(node, value, path: str):
    kind = _kind(node)
    if kind == "ExplicitTag" or kind == "Recursive":
        return _to(node.inner, value, path)
    if kind in ("Sequence", "Set"):
        by_name = {m.name: m for m in _members(node)}
        return {k: _to(by_name[k], v, f"{path}.{k}") if k in by_name else v for k, v in value.items()}
    if kind in ("SequenceOf", "SetOf"):
        return [_to(node.element_type, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "Choice":
        alt, inner = value
        if alt is None:
            return {UNKNOWN_KEY: _hex(inner)}
        return {alt: _to(node.name_to_member[alt], inner, f"{path}.{alt}")}
    if kind in ("OctetString", "Any", "AnyDefinedBy"):
        return _hex(value)
    if kind == "BitString":
        data, bits = value
        return {"hex": _hex(data), "bits": bits}
    if kind in _TIMES:
        return value.isoformat() if hasattr(value, "isoformat") else value
    return value  # INTEGER, BOOLEAN, NULL, OID, strings, ENUMERATED


def _from(node, obj, path: str):
    kind = _kind(node)
    if kind == "ExplicitTag" or kind == "Recursive":
        return _from(node.inner, obj, path)
    if kind in ("Sequence", "Set"):
        if not isinstance(obj, dict):
            raise _Bad(path, f"expected an object, got {type(obj).__name__}")
        by_name = {m.name: m for m in _members(node)}
        unknown = sorted(set(obj) - set(by_name))
        if unknown:
            raise _Bad(path, f"unknown member(s) {', '.join(unknown)}; known: {', '.join(by_name) or 'none'}")
        return {k: _from(by_name[k], v, f"{path}.{k}") for k, v in obj.items()}
    if kind in ("SequenceOf", "SetOf"):
        if not isinstance(obj, list):
            raise _Bad(path, f"expected an array, got {type(obj).__name__}")
        return [_from(node.element_type, v, f"{path}[{i}]") for i, v in enumerate(obj)]
    if kind == "Choice":
        if not isinstance(obj, dict) or len(obj) != 1:
            names = ", ".join(m.name for m in node.members)
            raise _Bad(path, f"expected an object with exactly one of: {names}")
        ((alt, inner),) = obj.items()
        if alt == UNKNOWN_KEY:
            return (None, _unhex(inner, f"{path}.{alt}"))
        if alt not in node.name_to_member:
            names = ", ".join(m.name for m in node.members)
            raise _Bad(path, f"unknown alternative {alt!r}; expected one of: {names}")
        return (alt, _from(node.name_to_member[alt], inner, f"{path}.{alt}"))
    if kind in ("OctetString", "Any", "AnyDefinedBy"):
        return _unhex(obj, path)
    if kind == "BitString":
        if not isinstance(obj, dict) or set(obj) != {"hex", "bits"} or type(obj["bits"]) is not int:
            raise _Bad(path, 'expected {"hex": "...", "bits": <number of bits>}')
        return (_unhex(obj["hex"], f"{path}.hex"), obj["bits"])
    if kind == "Integer" or kind == "Real":
        if type(obj) is not int:
            raise _Bad(path, f"expected an integer, got {obj!r}")
        return obj
    if kind == "Boolean":
        if type(obj) is not bool:
            raise _Bad(path, f"expected true or false, got {obj!r}")
        return obj
    if kind == "Null":
        if obj is not None:
            raise _Bad(path, f"expected null, got {obj!r}")
        return None
    if kind == "ObjectIdentifier" or kind in _STRINGS or kind == "Enumerated":
        if not isinstance(obj, str):
            raise _Bad(path, f"expected a string, got {type(obj).__name__}")
        return obj
    if kind in _TIMES:
        if not isinstance(obj, str):
            raise _Bad(path, "expected an ISO 8601 date/time string")
        try:
            return _dt.datetime.fromisoformat(obj)
        except ValueError:
            raise _Bad(path, f"not an ISO 8601 date/time: {obj!r}") from None
    return obj


def to_json(type_name: str, value):
    """The JSON-ready form (dicts, lists, str, int, bool, None) of a decoded ``value`` of ``type_name``."""
    node = specification().types[resolve_type(type_name)].type
    return _to(node, value, "")


def from_json(type_name: str, obj):
    """The asn1tools value for the JSON form ``obj``; raises :class:`EncodeError` naming the bad path."""
    try:
        node = specification().types[resolve_type(type_name)].type
    except KeyError:
        raise EncodeError(type_name, "unknown type name (see `rsp types`)") from None
    try:
        return _from(node, obj, "")
    except _Bad as exc:
        raise EncodeError(type_name, str(exc)) from None
