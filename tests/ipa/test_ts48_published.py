"""Interop issue 14: the GSMA TS.48 generic eUICC test profile as GSMA publishes it (ASN.1 value notation, SAIP 2.3,
BER-TLV + SUCI variant; tests/data/saip/, provenance in tests/data/PROVENANCE.md), encoded to DER by an independent
ASN.1 implementation (pycrate, tests/euicc/ts48_published.py), served by the lab SM-DP+ from that file and
downloaded by the IPA through a Quectel-model virtual modem: it installs on the software eUICC byte for byte, under
the ICCID of its ProfileHeader."""

from __future__ import annotations

from ipa import messages as m
from rsp import tlv
from tests.euicc.ts48_published import TS48, TS48_ICCID, ts48_der, values
from tests.ipa.downloads import install_directly


def test_the_published_text_becomes_the_published_package():
    """30 Profile Elements in TS.48's order (header first, end last), 12 792 bytes, the header as published."""
    package = ts48_der()
    elements = list(tlv.iter_tlvs(package))
    assert len(elements) == len(values(TS48.read_text())) == 30
    assert elements[0].tag == 0xA0 and elements[-1].tag == 0xAA and len(package) == 12792
    header = elements[0]
    assert tlv.find(header, 0x83).value == bytes.fromhex(TS48_ICCID)  # plain digits, as SAIP writes it
    assert tlv.find(header, 0x82).value == b"GSMA Generic eUICC Test Profile"


async def test_the_published_ts48_profile_installs_through_the_virtual_modem(make_rig, smdp):
    package = ts48_der()
    rig = await install_directly(make_rig, smdp, package)  # order installed, PIR verified by the SM-DP+
    [installed] = rig.card.state.profiles
    assert m.iccid_to_str(installed.iccid) == TS48_ICCID
    assert installed.elements == package and installed.service_provider_name == "GSMA"
