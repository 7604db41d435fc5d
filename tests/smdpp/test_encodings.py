"""Everything the SM-DP+ encodes by hand (TLV) decodes with the project's ASN.1 schemas (rsp.asn1) and re-encodes
byte-identical; profiles and BPPs have the documented structure and sizes."""

from __future__ import annotations

import pytest

from rsp import asn1, tlv
from smdpp import binding, orders, profiles
from tests.smdpp.sim import Download, SimEuicc, unb64


def roundtrip(type_name: str, data: bytes):
    value = asn1.decode(type_name, data)
    assert asn1.encode(type_name, value) == data, type_name
    return value


@pytest.mark.parametrize("profile", ["ts48", "ts48-ppk", "test-class"])
def test_download_messages_roundtrip(es9, smdp, lab_pki, profile):
    order = orders.create_order(smdp.ctx.store, profile=profile, smdp_address=smdp.address)
    card = SimEuicc(lab_pki)
    dl = Download(es9, card, smdp.address, order.matching_id)
    auth = dl.initiate()
    signed1 = roundtrip("ServerSigned1", unb64(auth["serverSigned1"]))
    assert signed1["serverAddress"] == smdp.address
    assert signed1["transactionId"].hex().upper() == auth["transactionId"]
    roundtrip("EUICCInfo1", card.euicc_info1())
    asr = card.authenticate_server(auth, order.matching_id)
    roundtrip("AuthenticateServerResponse", asr)
    dl.auth = auth
    resp = dl.client.call(
        "authenticateClient",
        transactionId=auth["transactionId"],
        authenticateServerResponse=__import__("base64").b64encode(asr).decode(),
    )[1]
    dl.client_resp = resp
    meta = roundtrip("StoreMetadataRequest", unb64(resp["profileMetadata"]))
    p = profiles.get_profile(profile)
    assert meta["serviceProviderName"] == p.service_provider_name
    assert meta["profileName"] == p.profile_name
    assert meta["profileClass"] in (p.profile_class, profiles.PROFILE_CLASS[p.profile_class])
    nci = meta["notificationConfigurationInfo"][0]
    assert nci["notificationAddress"] == smdp.address
    assert nci["profileManagementOperation"] == (b"\xf0", 4)
    assert profiles.bcd_to_iccid(meta["iccid"]) == order.iccid
    signed2 = roundtrip("SmdpSigned2", unb64(resp["smdpSigned2"]))
    assert signed2["ccRequiredFlag"] is False
    bpp_resp = dl.get_bpp()
    bpp = unb64(bpp_resp["boundProfilePackage"])
    value = roundtrip("BoundProfilePackage", bpp)
    assert ("secondSequenceOf87" in value) == p.pre_protected
    assert all(len(s) <= 1020 for s in value["sequenceOf86"])
    isc = tlv.require(bpp, 0xBF23)
    roundtrip("InitialiseSecureChannelRequest", isc.raw)
    pir = card.load_bpp(bpp)
    roundtrip("ProfileInstallationResult", pir)
    roundtrip("PendingNotification", pir)
    roundtrip("CancelSessionResponse", card.cancel_session(1))
    roundtrip("OtherSignedNotification", card.other_notification(2, order.iccid, smdp.address))
    assert dl.notify(pir) == 204


def test_generated_packages_have_the_ts48_shape():
    """Header with the ICCID in plain digits (SAIP, as the published TS.48 profile), the PEs of TS.48 in their
    published order, each with its PEHeader, End last; EF.ICCID in the MF nibble-swapped; the package is what the
    software eUICC accepts for the metadata's ICCID."""
    from euicc import profile_package

    for p in profiles.PROFILES.values():
        iccid = p.iccid_prefix + "0" * (18 - len(p.iccid_prefix)) + "7"
        upp = profiles.profile_package(p.name, iccid)
        assert len(upp) == p.size
        pes = list(tlv.iter_tlvs(upp))
        assert pes[0].tag == profiles.PE_HEADER and pes[-1].tag == profiles.PE_END
        assert tlv.find(pes[0], 0x83).value == bytes.fromhex(iccid + "F")
        assert [pe.tag for pe in pes[1:-1]] == [tag for tag, _name, _tpl in profiles.TS48_PES]
        assert [tlv.find(pe, 0xA0, 0x81).value for pe in pes[1:]] == [bytes([n]) for n in range(2, len(pes) + 1)]
        assert tlv.find(pes[1], 0xA4, 0x83).value == profiles.iccid_to_bcd(iccid)  # EF.ICCID in the MF
        metadata = profiles.store_metadata_request(p, iccid, "smdp.example")
        package = profile_package.parse(upp)
        profile_package.check_against_metadata(package, tlv.find(metadata, 0x5A).value)
        assert b"".join(profiles.package_segments(p.name, iccid)) == upp
        assert all(len(c) <= profiles.MAX_SEGMENT_PLAINTEXT for c in profiles.package_segments(p.name, iccid))
    assert 12_000 <= profiles.PROFILES["ts48"].size <= 14_000 and profiles.PROFILES["large"].size == 102_400


def test_iccid_bcd_and_luhn():
    assert profiles.iccid_to_bcd("89490000110000000015") == bytes.fromhex("98940000110000000051")
    assert profiles.bcd_to_iccid(profiles.iccid_to_bcd("8949000011000000015")) == "8949000011000000015"
    from smdpp.store import luhn_digit

    assert luhn_digit("894900001100000001") == "5"  # the Luhn check digit (standard validation of the full number)
    with pytest.raises(ValueError):
        profiles.iccid_to_bcd("12")


def test_pre_protected_segments_are_cached_per_iccid():
    a = binding._protected_86("ts48-ppk", "8949000012000000014")
    b = binding._protected_86("ts48-ppk", "8949000012000000014")
    assert a is b
    assert binding._protected_86("ts48-ppk", "8949000012000000022") != a
