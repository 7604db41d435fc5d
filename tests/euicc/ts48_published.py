"""The GSMA TS.48 generic eUICC test profile as published in ASN.1 value notation (tests/data/saip/, provenance in
tests/data/PROVENANCE.md), turned into its DER profile package by an independent ASN.1 implementation: pycrate
compiles the TCA SAIP module ``PEDefinitions`` v3.3.1 (as published, tests/data/saip/PE_Definitions-3.3.1.asn) and
reads each ``valueN ProfileElement ::= ...`` of the profile text. Nothing of this project's own profile generator or
codec is involved, so the package is what a profile creator's tool makes of the published text.

Two adjustments, both to the inputs of pycrate, never to the data files:

* The published module gives ``sqnInit SEQUENCE (SIZE (32)) OF OCTET STRING (SIZE (6)) DEFAULT '000000000000'H``:
  a DEFAULT of the element type for a SEQUENCE OF, which pycrate (rightly) refuses to compile. The DEFAULT becomes
  OPTIONAL; the TS.48 text gives all 32 values explicitly, so the encoding is the same.
* The TS.48 text is written against SAIP 2.3, whose module spells a member ``keyCompontents``; v3.3.1 corrected it
  to ``keyComponents``. The name is not on the wire (automatic tags), so the encoding is the same.
"""

from __future__ import annotations

import re
import tempfile
from functools import cache
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "saip"
MODULE = DATA / "PE_Definitions-3.3.1.asn"
TS48 = DATA / "TS48_SAIP2.3_BERTLV_SUCI.asn"
#: the ProfileHeader ICCID of the published profile (plain digit order, as SAIP writes it)
TS48_ICCID = "89000123456789012341"


@cache
def _profile_element():
    from tests.rsp.asn1_oracle import pycrate_module

    text = MODULE.read_text(encoding="utf-8").replace(
        "OF OCTET STRING (SIZE (6)) DEFAULT '000000000000'H", "OF OCTET STRING (SIZE (6)) OPTIONAL"
    )
    module = pycrate_module(text, Path(tempfile.mkdtemp(prefix="saip-")) / "saip_pe_definitions.py")
    return module.PEDefinitions.ProfileElement


def values(text: str) -> list[str]:
    """The value notation of each Profile Element, in order."""
    return re.split(r"^value\d+ ProfileElement ::= ", text, flags=re.M)[1:]


@cache
def ts48_der() -> bytes:
    """The published TS.48 profile as a DER profile package: the Profile Elements, each DER, one after another."""
    pe = _profile_element()
    out = b""
    for value in values(TS48.read_text(encoding="utf-8").replace("keyCompontents", "keyComponents")):
        pe.from_asn1(value)
        out += pe.to_der()
    return out
