"""Interop issue 14: the GSMA TS.48 generic eUICC test profile as GSMA publishes it (ASN.1 value notation, SAIP 2.3,
BER-TLV + SUCI variant; tests/data/saip/, provenance in tests/data/PROVENANCE.md), encoded to DER by an independent
ASN.1 implementation (pycrate, tests/euicc/ts48_published.py), served by the lab SM-DP+ from that file and
downloaded by the IPA through a Quectel-model virtual modem: it installs on the software eUICC byte for byte, under
the ICCID of its ProfileHeader."""

from __future__ import annotations

from ipa import messages as m
from rsp import tlv
from smdpp import profiles
from smdpp.orders import create_order
from tests.euicc.ts48_published import TS48, TS48_ICCID, ts48_der, values
from tests.ipa.test_downloads import order_state, smdp, trigger  # noqa: F401 (fixture)


def test_the_published_text_becomes_the_published_package():
    """30 Profile Elements in TS.48's order (header first, end last), 12 792 bytes, the header as published."""
    package = ts48_der()
    elements = list(tlv.iter_tlvs(package))
    assert len(elements) == len(values(TS48.read_text())) == 30
    assert elements[0].tag == 0xA0 and elements[-1].tag == 0xAA and len(package) == 12792
    header = elements[0]
    assert tlv.find(header, 0x83).value == bytes.fromhex(TS48_ICCID)  # plain digits, as SAIP writes it
    assert tlv.find(header, 0x82).value == b"GSMA Generic eUICC Test Profile"


async def test_the_published_ts48_profile_installs_through_the_virtual_modem(make_rig, smdp):  # noqa: F811
    package = ts48_der()
    imported = profiles.import_upp(smdp.ctx.config.data_dir, package, service_provider_name="GSMA")
    rig = await make_rig("http", profiles=False, device="modem", modem_model="EG25-G")
    rig.config.es9.ca_file = str(smdp.ca_bundle)
    rig.config.ipa.indirect_download = False
    agent = rig.agent()
    await agent.start()
    try:
        ac = create_order(smdp.ctx.store, profile=imported.name, smdp_address=smdp.address).activation_code
        rig.peer.queue(trigger(ac))
        await agent.poll_once()
        [installed] = rig.card.state.profiles
        assert m.iccid_to_str(installed.iccid) == TS48_ICCID
        assert installed.elements == package and installed.service_provider_name == "GSMA"
        assert order_state(smdp, ac) == "installed"
        assert [(n.kind, n.verified) for n in smdp.ctx.store.notifications()] == [("pir", True)]
    finally:
        await agent.close()
