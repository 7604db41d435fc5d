"""The typed ES10 client against the software eUICC: every function, named card codes, and hypothesis on the
response parsers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from euicc.card import SoftEuicc
from euicc.channel import LocalApduChannel
from ipa import messages as m
from ipa.es10 import (
    AuthenticateServerResult,
    EimConfiguration,
    Es10Client,
    Es10Error,
    EuiccInfo2,
    PrepareDownloadResult,
    ProfileInfo,
    ProfileInstallationResult,
    bpp_segments,
)
from rsp import tlv
from rsp.errors import DecodeError
from tests.ipa.conftest import EID, EID_TEXT, ICCID_A, ICCID_B, seed_profiles


@pytest.fixture
async def es10(lab_pki, tmp_path):
    card = SoftEuicc.create(lab_pki.root, EID_TEXT, tmp_path / "card.cbor", default_dp_address="dp.lab.example")
    seed_profiles(card)
    client = Es10Client(LocalApduChannel(card), block_size=40)
    client.card = card
    yield client
    await client.close()


async def test_identification_and_configuration(es10):
    assert await es10.get_eid() == EID
    info1 = await es10.get_euicc_info1()
    assert info1[:2] == b"\xbf\x20"
    info2 = await es10.get_euicc_info2()
    assert info2.svn == "2.5.0" and info2.ipa_mode == 0 and info2.iot_versions == ("1.2.0",)
    assert info2.ci_pkids_verification and info2.fallback_supported
    assert len(await es10.get_euicc_challenge()) == 16
    addrs = await es10.get_euicc_configured_addresses()
    assert addrs.default_dp_address == "dp.lab.example" and addrs.root_ds_address == "lpa.ds.gsma.com"
    certs = await es10.get_certs()
    assert certs.euicc_certificate == es10.card.state.euicc_cert and certs.eum_certificate == es10.card.state.eum_cert
    assert (await es10.get_rat())[:2] == b"\xbf\x43"
    assert await es10.get_connectivity_parameters() is None
    assert await es10.set_default_dp_address("new.dp.example") == 0
    assert (await es10.get_euicc_configured_addresses()).default_dp_address == "new.dp.example"
    assert await es10.get_eim_configuration_data() == []


async def test_profiles_and_local_functions_with_named_codes(es10):
    profiles = await es10.get_profiles_info()
    assert [(p.iccid, p.state) for p in profiles] == [(ICCID_A, 1), (ICCID_B, 0)]
    assert [p.iccid for p in await es10.get_profiles_info(ICCID_B)] == [ICCID_B]
    with pytest.raises(Es10Error) as err:
        await es10.profile_rollback()
    assert err.value.step == "ProfileRollback" and err.value.code_name == "rollbackNotAllowed(1)"
    with pytest.raises(Es10Error) as err:
        await es10.execute_fallback_mechanism()
    assert err.value.code_name == "fallbackNotAvailable(6)"
    with pytest.raises(Es10Error) as err:
        await es10.immediate_enable()
    assert err.value.code_name.startswith(("immediateEnableNotAvailable", "noSessionContext"))
    assert await es10.configure_immediate_profile_enabling(True, "dp.lab.example") == 0
    with pytest.raises(Es10Error) as err:
        await es10.disable_emergency_profile()
    assert err.value.step == "DisableEmergencyProfile" and err.value.code is not None
    assert await es10.list_notification() == []
    assert await es10.retrieve_notifications_list() == []
    assert await es10.retrieve_euicc_package_results() == []
    assert await es10.remove_notification_from_list(0) == 1  # nothingToDelete


async def test_status_word_errors_name_the_function(es10):
    with pytest.raises(Es10Error) as err:
        await es10._cmd(b"\xbf\x7e\x00", "Unknown")  # no such ES10 function on the card
    assert err.value.sw == 0x6A88 and "6A88" in str(err.value)
    with pytest.raises(Es10Error, match="AddInitialEim: request is not a BF57"):
        await es10.add_initial_eim(b"\x30\x00")


async def test_memory_reset_deletes_operational_profiles(es10):
    assert await es10.euicc_memory_reset({0}) == 0
    assert await es10.get_profiles_info() == []


def test_bpp_segments_follow_the_brief():
    bf23 = tlv.encode(0xBF23, b"\x01")
    a0 = tlv.encode(0xA0, tlv.encode(0x87, b"\x02"))
    a1 = tlv.encode(0xA1, tlv.encode(0x88, b"\x03") + tlv.encode(0x88, b"\x04"))
    a3 = tlv.encode(0xA3, tlv.encode(0x86, b"\x05") + tlv.encode(0x86, b"\x06"))
    bpp = tlv.encode(0xBF36, bf23 + a0 + a1 + a3)
    segs = bpp_segments(bpp)
    assert segs == [bpp[:3] + bf23, a0, a1[:2], a1[2:5], a1[5:], a3[:2], a3[2:5], a3[5:]]
    assert b"".join(segs) == bpp


parsers = [
    lambda d: EuiccInfo2.parse(d),
    lambda d: ProfileInfo.parse(tlv.parse_exact(d)),
    lambda d: EimConfiguration.parse(tlv.parse_exact(d)),
    lambda d: ProfileInstallationResult.parse(d),
    lambda d: AuthenticateServerResult.parse(d),
    lambda d: PrepareDownloadResult.parse(d),
    bpp_segments,
    lambda d: m.parse_pending_notification(tlv.parse_exact(d)),
]


@given(st.binary(max_size=200), st.sampled_from(range(len(parsers))))
def test_es10_response_parsers_raise_only_decode_or_es10_errors(data, which):
    try:
        parsers[which](data)
    except (DecodeError, Es10Error):
        pass


@given(st.sampled_from([0xBF22, 0xE3, 0x30, 0xBF37, 0xBF38, 0xBF21, 0xBF36]), st.binary(max_size=150))
def test_es10_parsers_on_well_framed_garbage(tag, body):
    data = tlv.encode(tag, body)
    for parse in parsers:
        try:
            parse(data)
        except (DecodeError, Es10Error):
            pass
