"""The bridge and the virtual modem with the software eUICC (``euicc.card.SoftEuicc``) as the SIM.

Every quirk on both routes: the EID, GetEuiccInfo2, GetCerts (a long answer in several GET RESPONSE rounds) and a
1 KB GetProfilesInfo (a long STORE DATA chain). Then the whole story through the modem: a profile download (BPP
segments as STORE DATA chains), an eIM package that enables it, the REFRESH that resets the SIM, and the re-open.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from euicc.card import SoftEuicc
from firmware_bridge.channel import AtApduChannel
from firmware_bridge.errors import ChannelLost
from firmware_bridge.state_change import profile_state_changed
from ipa.es10 import Es10Client
from rsp import tlv
from rsp.pki import create_lab_pki, lab_eid
from tests.euicc.conftest import eim_config, eim_package, new_profile
from tests.euicc.smdp_side import SmdpSide, segments
from tests.firmware_bridge.conftest import engine_for
from tests.firmware_bridge.test_channel import QUIRKS

pytestmark = pytest.mark.timeout(120)

T = tlv.encode
EID = lab_eid(11)
GET_EID = bytes.fromhex("BF3E035C015A")
GET_EUICC_INFO2 = bytes.fromhex("BF2200")
GET_CERTS = bytes.fromhex("BF5600")
LONG_PROFILES_INFO = T(0xBF2D, T(0x5C, bytes([0x5A, 0x4F, 0x92]) * 330))  # 1 KB: 9 blocks of 120 bytes


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return create_lab_pki(tmp_path_factory.mktemp("pki"), curves=("nist",), eids=(EID,))


@pytest.fixture
def state_file(pki, tmp_path):
    path = tmp_path / "euicc.state"
    SoftEuicc.create(pki.root, EID, path)
    return path


async def eid_info2_and_long_chain(channel: AtApduChannel, block_size: int | None = None) -> bytes:
    es10 = Es10Client(channel, block_size or channel.recommended_block_size)
    assert tlv.require(await es10.call(GET_EID), 0x5A).value.hex().upper() == EID
    assert tlv.parse_exact(await es10.call(GET_EUICC_INFO2)).tag == 0xBF22
    certs = await es10.call(GET_CERTS)
    assert len(certs) > 512  # answered in three or more GET RESPONSE rounds
    eum, euicc = tlv.children(tlv.require(certs, 0xA0))
    assert (eum.tag, euicc.tag) == (0xA5, 0xA6)
    profiles = await es10.call(LONG_PROFILES_INFO)
    assert tlv.require(profiles, 0xA0) is not None
    return profiles


@pytest.mark.parametrize("route", ["cgla", "csim"])
@pytest.mark.parametrize("quirks", QUIRKS)
async def test_software_euicc_through_every_quirk(modem_factory, state_file, route, quirks):
    vm = modem_factory(SoftEuicc.load(state_file), quirks)
    async with engine_for(vm.path) as at:
        channel = AtApduChannel(at, "generic", route)
        await channel.open()
        assert await eid_info2_and_long_chain(channel) == bytes.fromhex("BF2D02A000")  # no profile yet
        await channel.close()
    if "error-once-at" in quirks:
        assert vm.core.injected_errors == 1


async def download(es10: Es10Client, smdp: SmdpSide, profile, eid: bytes) -> bytes:
    challenge = tlv.require(await es10.call(bytes.fromhex("BF2E00")), 0x80).value
    smdp.check_authenticate_response(await es10.call(smdp.authenticate_server_request(challenge)))
    smdp.check_prepare_response(await es10.call(smdp.prepare_download_request()))
    answer = b""
    for seg in segments(smdp.bind(profile, eid)):
        answer = await es10.call(seg)
        if answer:
            break
    return answer


def eim_key():
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, spki


@pytest.mark.parametrize(
    "route,model,quirks,block_size",
    [
        ("cgla", "EG25-G", "refresh-reset=0.2,urcs", 120),
        ("csim", "SIM7600G-H", "refresh-reset,echo", 255),
        ("cgla", "MC7455", "refresh-reset,error-once-at=12", 120),
    ],
)
async def test_download_enable_refresh_and_reopen(modem_factory, pki, state_file, route, model, quirks, block_size):
    card = SoftEuicc.load(state_file)
    vm = modem_factory(card, quirks, model=model)
    async with engine_for(vm.path) as at:
        channel = AtApduChannel(at, route=route)
        await channel.open()
        es10 = Es10Client(channel, block_size)
        profile = new_profile(3)
        pir = await download(es10, SmdpSide(pki), profile, card.state.eid)
        assert tlv.parse_exact(pir).tag == 0xBF37
        assert card.state.profile(profile.iccid) is not None  # installed, through the modem

        key, spki = eim_key()
        added = await es10.call(T(0xBF57, T(0xA0, T(0x30, eim_config("eim-fw", spki)))))
        assert tlv.parse_exact(added).tag == 0xBF57
        package = eim_package(key, "eim-fw", card.state.eid, 1, T(0xA3, T(0x5A, profile.iccid)))
        result = await es10.call(package)
        assert profile_state_changed(0xBF51, result)  # a real EuiccPackageResult with enableResult ok
        assert card.state.enabled_profile().iccid == profile.iccid

        # REFRESH: the modem resets the SIM; the next APDU finds the channel gone; open() re-selects.
        with pytest.raises(ChannelLost):
            for _ in range(50):
                await es10.call(GET_EID)
        assert vm.core.sim_resets == 1
        await channel.open()
        info = await es10.call(T(0xBF2D, T(0x5C, bytes([0x5A, 0x9F, 0x70]))))
        assert profile.iccid in info and channel.reopens == 1


async def test_quectel_without_refresh_gets_a_cfun_cycle_after_a_real_enable(modem_factory, pki, state_file):
    card = SoftEuicc.load(state_file)
    vm = modem_factory(card, model="EG25-G")  # this modem ignores REFRESH
    async with engine_for(vm.path) as at:
        channel = AtApduChannel(at)
        await channel.open()
        assert channel.profile.cfun_cycle_after_enable
        es10 = Es10Client(channel)
        profile = new_profile(4)
        await download(es10, SmdpSide(pki), profile, card.state.eid)
        key, spki = eim_key()
        await es10.call(T(0xBF57, T(0xA0, T(0x30, eim_config("eim-q", spki)))))
        # A package that changes nothing (listProfileInfo) does not cost a SIM re-read...
        await es10.call(eim_package(key, "eim-q", card.state.eid, 1, T(0xBF2D, b"")))
        assert channel.sim_refreshes == 0 and not channel.reset_detected
        # ...an enable does.
        await es10.call(eim_package(key, "eim-q", card.state.eid, 2, T(0xA3, T(0x5A, profile.iccid))))
        assert channel.sim_refreshes == 1 and channel.reset_detected and vm.core.sim_resets == 1
        await channel.open()
        assert profile.iccid in await eid_info2_and_long_chain(channel)
