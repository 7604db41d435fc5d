"""Test-only ASN.1 oracle: pycrate compiled from the GSMA modules as published (tests/data/asn1/).

Our codec (`rsp.asn1`) is asn1tools with schemas written for this project. This module gives an independent
implementation to check it against: a different compiler (pycrate) reading the published module text, so a
mistake we made in our schema (a tag, an OPTIONAL, a member order) shows up as a disagreement instead of
round-tripping happily through our own encoder and decoder.

``compiled()`` compiles the modules once per test session (about 0.5 s). Values cross between the two libraries
through ``to_common`` (either side's value -> one canonical form for comparison) and ``to_oracle`` (our value ->
pycrate's value); the differences between the two representations are:

=====================  ==========================  ==========================
ASN.1                  asn1tools (ours)            pycrate (oracle)
=====================  ==========================  ==========================
BIT STRING             ``(bytes, nbits)``          ``(int, nbits)``
OBJECT IDENTIFIER      ``"1.2.3"``                 ``(1, 2, 3)``
NULL                   ``None``                    ``0``
ANY / open type        TLV bytes                   ``("_unk_<tag>", content)``
Certificate, CRL       tbs part opaque bytes       fully parsed
DEFAULT member absent  decoded as the default      absent
=====================  ==========================  ==========================

Certificates and CRLs are compared as their DER bytes (our codec keeps the to-be-signed part opaque by design).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import tempfile
from functools import cache
from pathlib import Path

from rsp import asn1, tlv

ASN1_DIR = Path(__file__).resolve().parents[1] / "data" / "asn1"
# Search order for a type name: SGP.32 first (it holds the SGP32- variants), then SGP.22, then the imports.
MODULES = ("SGP32Definitions", "RSPDefinitions", "PKIX1Explicit88", "PKIX1Implicit88", "PEDefinitions")
# Referenced types compared as DER; our name for each.
# Members our schema has that the published type (as the published SGP.32 module references it) does not:
# SGP.32 additions inside SGP.22 types. Under EXTENSIBILITY IMPLIED they are extension additions to the
# oracle, which skips them on decode; they are left out of the comparison (and reported by `dropped`).
KNOWN_ADDITIONS = {
    # SGP.32 v1.2 §5.9.2 SGP32-EUICCInfo2 members, sent by SGP.32 eUICCs also inside EuiccSigned1.euiccInfo2,
    # which the published SGP32Definitions imports from SGP.22 (where EUICCInfo2 stops at [15]).
    ("EUICCInfo2", "ipaMode"),
    ("EUICCInfo2", "euiccCiPKIdListForSigningV3"),
    ("EUICCInfo2", "additionalEuiccInfo"),
    ("EUICCInfo2", "highestSvn"),
    ("EUICCInfo2", "iotSpecificInfo"),
    # SGP.32 ProfileInfo / StoreMetadataRequest additions (our SGP32-ProfileInfo, SGP32-StoreMetadataRequest);
    # the published SGP32Definitions uses SGP.22's ProfileInfo and StoreMetadataRequest.
    ("ProfileInfo", "ecallIndication"),
    ("ProfileInfo", "fallbackAttribute"),
    ("ProfileInfo", "fallbackAllowed"),
    ("StoreMetadataRequest", "ecallIndication"),
    ("StoreMetadataRequest", "fallbackAllowed"),
}
_AS_DER = {("PKIX1Explicit88", "Certificate"): "Certificate", ("PKIX1Explicit88", "CertificateList"): "CertificateList"}


# pycrate 0.8.1 defect: under AUTOMATIC TAGS it makes the automatic tag of a component EXPLICIT when the
# component's type is a *tagged* CHOICE (X.680 31.2.7 c: explicit only for an *untagged* CHOICE), so it wants
# A1 { BF41 { A0 ... } } where X.680, real traffic (tests/data/sgp32_v10_captures.json `CancelSessionRequestEsipa`)
# and our codec have A1 { A0 ... }. The two SEQUENCEs where the published modules hit this get their automatic
# tags written out, which is the same encoding by X.680 25.3. (module, exact published text, replacement)
PATCHES = (
    (
        "SGP32Definitions",
        "  transactionId TransactionId,\n  cancelSessionResponse SGP32-CancelSessionResponse",
        "  transactionId [0] TransactionId,\n  cancelSessionResponse [1] IMPLICIT SGP32-CancelSessionResponse",
    ),
    (
        "RSPDefinitions",
        "   transactionId TransactionId,\n   cancelSessionResponse CancelSessionResponse",
        "   transactionId [0] TransactionId,\n   cancelSessionResponse [1] IMPLICIT CancelSessionResponse",
    ),
)


def _patched(text: str) -> str:
    header = "\n" + text.split("DEFINITIONS", 1)[0]
    for module, old, new in PATCHES:
        if f"\n{module} {{" not in header:
            continue
        if text.count(old) != 1:
            raise AssertionError(f"oracle patch for {module} no longer matches the module text")
        text = text.replace(old, new)
    return text


@cache
def compiled():
    """The generated pycrate module (one attribute per ASN.1 module), compiled once per process."""
    files = sorted(ASN1_DIR.glob("*.asn"))
    texts = [_patched(f.read_text(encoding="utf-8")) for f in files]
    digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
    return pycrate_module(texts, Path(tempfile.mkdtemp(prefix="asn1-oracle-")) / f"oracle_{digest}.py")


def pycrate_module(texts: str | list[str], out: Path):
    """The ASN.1 module text(s) compiled by pycrate into the Python module ``out``, imported."""
    from pycrate_asn1c.asnproc import GLOBAL, PycrateGenerator, compile_text, generate_modules

    GLOBAL.clear()
    compile_text(texts)
    generate_modules(PycrateGenerator, str(out))
    GLOBAL.clear()
    spec = importlib.util.spec_from_file_location(out.stem, out)
    module = importlib.util.module_from_spec(spec)
    sys.modules[out.stem] = module
    spec.loader.exec_module(module)
    return module


def oracle_type(name: str):
    """The pycrate object for the type ``name`` (spec spelling, e.g. ``SGP32-EUICCInfo2``); KeyError if absent."""
    mod = compiled()
    attr = name.replace("-", "_")
    for module_name in MODULES:
        obj = getattr(getattr(mod, module_name), attr, None)
        if obj is not None:
            return obj
    raise KeyError(name)


def decode(name: str, data: bytes):
    """Decode DER/BER ``data`` as ``name`` with the oracle; the oracle's value. Raises on any error."""
    obj = oracle_type(name)
    obj.from_ber(bytes(data))
    value = obj.get_val()
    # from_ber must have consumed everything: re-read the outer TLV length
    top = tlv.check_structure(bytes(data), what=name)
    if len(top.raw) != len(data):
        raise ValueError(f"{len(data) - len(top.raw)} trailing bytes")
    return value


def encode(name: str, oracle_value) -> bytes:
    """DER encoding of a pycrate value of ``name``."""
    obj = oracle_type(name)
    obj.set_val(oracle_value)
    return obj.to_der()


# ----------------------------------------------------------------------------------------------------------------
# Value mapping
# ----------------------------------------------------------------------------------------------------------------
def _ref(node):
    called = getattr(getattr(node, "_typeref", None), "called", None)
    return tuple(called) if called else None


def _any_codec():
    """An untagged ANY object, used to convert between TLV bytes and pycrate's ANY value."""
    return compiled().PKIX1Explicit88.AlgorithmIdentifier._cont["parameters"]


def _any_to_tlv(node, value) -> bytes:
    codec = _any_codec()
    codec.set_val(value)
    return codec.to_der()


def _tlv_to_any(data: bytes):
    codec = _any_codec()
    codec.from_der(bytes(data))
    return codec.get_val()


def _bits_to_int(value) -> tuple[int, int]:
    data, nbits = value
    if nbits == 0:
        return 0, 0
    return int.from_bytes(bytes(data), "big") >> (8 * len(data) - nbits), nbits


def _addition(node, key: str, dropped) -> bool:
    if key in node._cont:
        return False
    owner = (_ref(node) or (None, node._name))[1]
    if (owner, key) not in KNOWN_ADDITIONS:
        raise KeyError(f"{owner}.{key}: member unknown to the published module")
    if dropped is not None:
        dropped.append(f"{owner}.{key}")
    return True


def to_common(node, value, side: str, dropped: list | None = None):
    """Canonical form of ``value`` (of pycrate type object ``node``) from ``side`` "ours" or "oracle".

    Members in ``KNOWN_ADDITIONS`` are left out and their names appended to ``dropped``.
    """
    ref = _ref(node)
    if ref in _AS_DER:
        if side == "ours":
            return ("DER", asn1.encode(_AS_DER[ref], value, strict=False))
        return ("DER", encode(ref[1], value))
    kind = node.TYPE
    if kind in ("SEQUENCE", "SET"):
        out = {}
        for key, item in value.items():
            if _addition(node, key, dropped):
                continue
            comp = node._cont[key]
            if comp._def is not None and item == comp._def:
                continue  # DER leaves a DEFAULT value out; asn1tools decodes it back in, pycrate does not
            out[key] = to_common(comp, item, side, dropped)
        return out
    if kind in ("SEQUENCE OF", "SET OF"):
        return [to_common(node._cont, item, side, dropped) for item in value]
    if kind == "CHOICE":
        name, item = value
        return (name, to_common(node._cont[name], item, side, dropped))
    if kind == "BIT STRING":
        return _bits_to_int(value) if side == "ours" else tuple(value)
    if kind == "OBJECT IDENTIFIER":
        return tuple(int(x) for x in value.split(".")) if side == "ours" else tuple(value)
    if kind == "NULL":
        return None
    if kind in ("ANY", "OPEN_TYPE"):
        return bytes(value) if side == "ours" else _any_to_tlv(node, value)
    if isinstance(value, bytearray):
        return bytes(value)
    return value


def to_oracle(node, value):
    """Our (asn1tools) value of pycrate type ``node`` as a pycrate value."""
    ref = _ref(node)
    if ref in _AS_DER:
        return decode(ref[1], asn1.encode(_AS_DER[ref], value, strict=False))
    kind = node.TYPE
    if kind in ("SEQUENCE", "SET"):
        return {key: to_oracle(node._cont[key], item) for key, item in value.items() if not _addition(node, key, None)}
    if kind in ("SEQUENCE OF", "SET OF"):
        return [to_oracle(node._cont, item) for item in value]
    if kind == "CHOICE":
        name, item = value
        return (name, to_oracle(node._cont[name], item))
    if kind == "BIT STRING":
        return _bits_to_int(value)
    if kind == "OBJECT IDENTIFIER":
        return tuple(int(x) for x in value.split("."))
    if kind == "NULL":
        return 0
    if kind in ("ANY", "OPEN_TYPE"):
        return _tlv_to_any(value)
    return value
