"""ASN.1 codec for SGP.32 v1.2 (`SGP32Definitions`) and the SGP.22 v2.5 subset it needs (`RSPDefinitions`).

Public API::

    encode(type_name, value) -> bytes          # DER; raises rsp.errors.EncodeError only
    decode(type_name, data) -> value           # raises rsp.errors.DecodeError only
    TOP_LEVEL_TYPES                            # ESipa, eIM package, ES10 and ES9+ message types
    guess_types(data) -> list[str]             # top-level types whose leading tag matches (for --auto)
    type_names() -> list[str]                  # every type name the codec accepts

Type names are the specification's (``GetEimPackageResponse``, ``EuiccPackageRequest``, ``SGP32-EUICCInfo2`` ...).
Values follow asn1tools (see docs/asn1.md): SEQUENCE = dict, CHOICE = ``(alternative, value)``, OCTET STRING =
bytes, BIT STRING = ``(bytes, number_of_bits)``, NULL = None, OBJECT IDENTIFIER = dotted str, Certificate = dict
with the raw ``tbsCertificate`` bytes (use :func:`certificate_der`).

Decoding rejects trailing bytes after the top-level TLV. A CHOICE alternative this schema does not know (a newer
spec version) decodes to ``(None, raw_tlv_bytes)`` and encodes back to the same bytes. Unknown SEQUENCE members
(extension additions) are skipped on decode, so such a message does not re-encode byte-identical: signed data is
never re-encoded anyway (cut it out of the received bytes with :mod:`rsp.tlv`).

The schemas are compiled once and cached on disk (see :mod:`rsp.asn1._compiled`); importing this module is cheap,
the first encode/decode loads the cache.
"""

from __future__ import annotations

from functools import lru_cache

from asn1tools.codecs.ber import TAG_MISMATCH as _TAG_MISMATCH

from rsp import tlv
from rsp.asn1.catalog import ALIASES, ES9_TYPES, ES10_TYPES, ESIPA_TYPES, TOP_LEVEL_TYPES
from rsp.errors import DecodeError, EncodeError

__all__ = [
    "ES9_TYPES",
    "ES10_TYPES",
    "ESIPA_TYPES",
    "TOP_LEVEL_TYPES",
    "DecodeError",
    "EncodeError",
    "certificate_der",
    "certificate_from_der",
    "decode",
    "decode_prefix",
    "encode",
    "guess_types",
    "leading_tags",
    "resolve_type",
    "specification",
    "type_names",
]


_spec_loader = None  # rsp.asn1._compiled.specification once imported (the import is lazy: asn1tools is heavy)


def specification():
    """The compiled asn1tools specification (internal names, including the ``-Body`` helper types)."""
    global _spec_loader
    if _spec_loader is None:
        from rsp.asn1._compiled import specification as _spec

        _spec_loader = _spec
    return _spec_loader()  # lru_cache'd there: compiled at most once per process


def resolve_type(type_name: str) -> str:
    """Map a public type name to the compiled one; raise KeyError for unknown names."""
    name = ALIASES.get(type_name, type_name)
    if name in specification().types:
        return name
    raise KeyError(type_name)


@lru_cache(maxsize=1)
def _public_names() -> tuple[str, ...]:
    names = [n for n in specification().types if not n.endswith("-Body")]
    return tuple(sorted(set(names) | set(ALIASES)))


def type_names() -> list[str]:
    """Every type name accepted by :func:`encode` / :func:`decode` (the spec's names, plus a few aliases)."""
    return list(_public_names())


def _unknown_type(type_name: str, error_cls):
    return error_cls(type_name, "unknown type name (see `rsp types`)")


class _Mismatch(Exception):
    pass


def _normalise(value):
    """asn1tools returns bytearray for ANY and some OCTET STRINGs; make every byte value immutable bytes.

    Also catches asn1tools' internal "tag mismatch" marker, which it can leave inside a value on malformed input.
    """
    if value is _TAG_MISMATCH:
        raise _Mismatch
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_normalise(v) for v in value)
    return value


def _error_text(exc: BaseException, compiled_name: str) -> str:
    message = getattr(exc, "message", None)
    location = getattr(exc, "location_str", "")
    if isinstance(message, str):
        # asn1tools' location starts with the type name, which our error already carries.
        if location == compiled_name:
            location = ""
        elif location.startswith(compiled_name + "."):
            location = location[len(compiled_name) + 1 :]
        return f"{location}: {message}" if location else message
    text = str(exc) or type(exc).__name__
    if isinstance(exc, RecursionError):
        return "nesting too deep"
    return f"{type(exc).__name__}: {text}" if not hasattr(exc, "location") else text


def decode_prefix(type_name: str, data: bytes, *, strict: bool = False):
    """Decode one TLV of ``type_name`` at the start of ``data``; return ``(value, length_consumed)``.

    ``strict`` also checks the ASN.1 size/value constraints. Only :class:`DecodeError` escapes.
    """
    try:
        name = resolve_type(type_name)
    except KeyError:
        raise _unknown_type(type_name, DecodeError) from None
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(type_name, f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise DecodeError(type_name, "no data", 0)
    # A structural walk first: a nested length that overruns its parent must never reach asn1tools.
    top = tlv.check_structure(data, what=type_name)
    try:
        value, length = specification().decode_with_length(name, data, check_constraints=strict)
    except Exception as exc:  # asn1tools raises many kinds (IndexError, ValueError, ...) on malformed input
        offset = getattr(exc, "offset", None)
        raise DecodeError(type_name, _error_text(exc, name), offset if isinstance(offset, int) else None) from exc
    if not isinstance(length, int) or length > len(data):
        raise DecodeError(type_name, "truncated: the TLV runs past the end of the data", len(data))
    if length != len(top.raw):
        # a component read past the end of its container (an unknown CHOICE alternative inside an explicit tag
        # of length 0 took the bytes after it): found by `make fuzz`, input BF3D 00 BB 01 BF
        raise DecodeError(type_name, "a component runs past the end of its TLV", len(top.raw))
    try:
        return _normalise(value), length
    except _Mismatch:
        raise DecodeError(type_name, "a component has an unexpected tag") from None


def _is_untagged_choice(type_name: str) -> bool:
    from rsp.asn1._compiled import PreservingChoice

    return isinstance(specification().types[resolve_type(type_name)].type, PreservingChoice)


def decode(type_name: str, data: bytes, *, strict: bool = False):
    """Decode exactly one DER/BER TLV of ``type_name``; trailing bytes are an error.

    ``strict=True`` also enforces SIZE/value constraints (e.g. a 16-byte eidValue).
    """
    value, length = decode_prefix(type_name, data, strict=strict)
    if length != len(data):
        raise DecodeError(type_name, f"{len(data) - length} trailing byte(s) after the TLV", length)
    if isinstance(value, tuple) and len(value) == 2 and value[0] is None and _is_untagged_choice(type_name):
        # The whole message is an alternative we do not know: that is not a message of this type.
        tag = (_read_tag(data) or b"").hex().upper()
        raise DecodeError(type_name, f"tag {tag} is not an alternative of {type_name}", 0)
    return value


def encode(type_name: str, value, *, strict: bool = True) -> bytes:
    """DER-encode ``value`` as ``type_name``. ``strict`` (default) enforces SIZE/value constraints."""
    try:
        name = resolve_type(type_name)
    except KeyError:
        raise _unknown_type(type_name, EncodeError) from None
    try:
        return bytes(specification().encode(name, value, check_types=True, check_constraints=strict))
    except Exception as exc:  # wrong types, missing members, bad bit strings ...
        raise EncodeError(type_name, _error_text(exc, name)) from exc


# ----------------------------------------------------------------------------------------------------------------
# Leading tags and --auto guessing
# ----------------------------------------------------------------------------------------------------------------
def _node_leading_tags(node) -> set[bytes]:
    from rsp.asn1._compiled import PreservingChoice

    if isinstance(node, PreservingChoice):
        tags: set[bytes] = set()
        for member in node.members:
            tags |= _node_leading_tags(member)
        return tags
    tag = getattr(node, "tag", None)
    if tag is None:  # ANY
        return set()
    out = {bytes(tag)}
    constructed = getattr(node, "constructed_tag", None)
    if constructed is not None:
        out.add(bytes(constructed))
    return out


def leading_tags(type_name: str) -> set[bytes]:
    """The tag bytes a value of ``type_name`` can start with (several for an untagged CHOICE)."""
    return _node_leading_tags(specification().types[resolve_type(type_name)].type)


@lru_cache(maxsize=1)
def _tag_index() -> dict[bytes, tuple[str, ...]]:
    index: dict[bytes, list[str]] = {}
    # Specific message types first, the two ESipa wrapper CHOICEs last.
    wrappers = (
        "EsipaMessageFromIpaToEim",
        "EsipaMessageFromEimToIpa",
        "V10-EsipaMessageFromIpaToEim",
        "V10-EsipaMessageFromEimToIpa",
    )
    ordered = [n for n in TOP_LEVEL_TYPES if n not in wrappers] + list(wrappers)
    for name in ordered:
        for tag in leading_tags(name):
            index.setdefault(tag, []).append(name)
    return {tag: tuple(names) for tag, names in index.items()}


def _read_tag(data: bytes) -> bytes | None:
    if not data:
        return None
    end = 1
    if data[0] & 0x1F == 0x1F:
        while end < len(data) and data[end] & 0x80:
            end += 1
        end += 1
        if end > len(data):
            return None
    return bytes(data[:end])


def guess_types(data: bytes) -> list[str]:
    """Top-level types (``TOP_LEVEL_TYPES``) whose encoding can start with the leading tag of ``data``.

    Both directions and all interfaces are considered; the more specific types come first and the ESipa wrapper
    CHOICEs last. Empty list when no top-level type has that tag.
    """
    tag = _read_tag(bytes(data))
    if tag is None:
        return []
    return list(_tag_index().get(tag, ()))


# ----------------------------------------------------------------------------------------------------------------
# Certificates
# ----------------------------------------------------------------------------------------------------------------
def certificate_der(value) -> bytes:
    """DER bytes of a decoded ``Certificate`` value (as found e.g. in ``eumCertificate``)."""
    return encode("Certificate", value, strict=False)


def certificate_from_der(der: bytes):
    """The ``Certificate`` value for DER certificate bytes (to put into a message)."""
    return decode("Certificate", der)
