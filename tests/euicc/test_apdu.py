"""APDU layer of the software eUICC: the exact sequences real IPAs/LPAs send (protocol brief §8, modems doc),
channel handling and every error status word."""

from __future__ import annotations

import pytest

from euicc.channel import LocalApduChannel
from rsp import apdu, tlv
from tests.euicc.conftest import LAB_EID

ISDR = "A0000005591010FFFFFFFF8900000100"
ECASD = "A0000005591010FFFFFFFF8900000200"
GET_EID = "BF3E035C015A"


def tx(card, hex_apdu: str) -> str:
    return card.process(bytes.fromhex(hex_apdu)).hex().upper()


def eid_response() -> str:
    return "BF3E125A10" + LAB_EID


def test_lpac_sequence_card_assigned_channel_get_response_8n(card):
    """lpac: MANAGE CHANNEL P2=00, SELECT P2=00 answered 61xx, GetEID in 120-byte blocks, GET RESPONSE CLA 8n."""
    assert tx(card, "0070000001") == "019000"
    sw = tx(card, "01A4040010" + ISDR)
    assert sw.startswith("61")
    fci = tx(card, f"81C00000{sw[2:]}")
    assert fci.endswith("9000")
    fci_tlv = tlv.parse_exact(bytes.fromhex(fci[:-4]))
    assert fci_tlv.tag == 0x6F and tlv.require(fci_tlv, 0x84).value.hex().upper() == ISDR
    # IoT proprietary template E1 {80 euiccConfiguration}: no profile enabled yet -> no bit set
    assert tlv.require(fci_tlv, 0xA5, 0xE1, 0x80).value == b"\x00"
    assert tlv.require(fci_tlv, 0xA5, 0xE0, 0x82).value == bytes([2, 5, 0])
    assert tx(card, "81E29100" + "06" + GET_EID) == "6115"  # 21 bytes: BF3E 12 5A 10 <16>
    assert tx(card, "81C0000015") == eid_response() + "9000"
    assert tx(card, "0070800100") == "9000"


def test_onomondo_sequence_explicit_channel_select_p2_04_get_response_0n(card):
    """onomondo-ipa (IPAd_Tests.ttcn): TERMINAL CAPABILITY, channel 1 opened explicitly, SELECT P2=04, GET RESPONSE
    CLA 0n in pieces."""
    assert tx(card, "80AA000005A903830107") == "9000"
    assert tx(card, "0070000100") == "9000"
    assert tx(card, "01A4040410" + ISDR).startswith("61")
    assert tx(card, "81E29100" + "06" + GET_EID) == "6115"
    first = tx(card, "01C0000010")  # take 16 of 21 bytes
    assert first == eid_response()[:32] + "6105"
    assert tx(card, "01C0000005") == eid_response()[32:] + "9000"


def test_select_without_response_data_and_ecasd(card):
    assert tx(card, "00A4040C10" + ISDR) == "9000"
    sw = tx(card, "00A4040010" + ECASD)
    assert sw.startswith("61")
    fci = bytes.fromhex(tx(card, f"00C00000{sw[2:]}")[:-4])
    assert tlv.require(fci, 0x84).value.hex().upper() == ECASD
    assert tlv.find(fci, 0xA5, 0xE1) is None
    # STORE DATA to the ECASD is refused; only the ISD-R speaks ES10
    assert tx(card, "80E29100" + "06" + GET_EID) == "6985"


def test_select_unknown_aid_and_bad_p1p2(card):
    assert tx(card, "00A4040010A0000005591010FFFFFFFF8900000300") == "6A82"
    assert tx(card, "00A4040110" + ISDR) == "6A86"
    assert tx(card, "00A4020002" + "6F07") == "6A82"
    assert tx(card, "00A40000023F00") == "9000"


@pytest.mark.parametrize("block_size", [1, 2, 7, 120, 200, 254, 255])
def test_store_data_chains_of_any_block_size(card, block_size):
    tx(card, "00A4040C10" + ISDR)
    command = bytes.fromhex("BF2200")
    info2 = None
    for style_get in ("00", "80"):
        chain = apdu.store_data_chain(command, 0, block_size)
        for blk in chain[:-1]:
            assert card.process(blk) == b"\x90\x00"
        sw = card.process(chain[-1])
        assert sw[0] == 0x61
        data = b""
        while sw[0] == 0x61:
            le = sw[1]
            resp = card.process(bytes([int(style_get, 16), 0xC0, 0, 0, le]))
            data += resp[:-2]
            sw = resp[-2:]
        assert sw == b"\x90\x00"
        assert tlv.parse_exact(data).tag == 0xBF22
        info2 = info2 or data
        assert data == info2


def test_long_command_chained_in_120_and_255_byte_blocks(card):
    """A ProfileInfoListRequest padded with a long tagList: 300+ bytes in 3 (120) and 2 (255) blocks."""
    tx(card, "00A4040C10" + ISDR)
    tag_list = bytes([0x5A, 0x4F, 0x92]) * 110
    command = tlv.encode(0xBF2D, tlv.encode(0x5C, tag_list))
    for size, blocks in ((120, 3), (255, 2)):
        chain = apdu.store_data_chain(command, 0, size)
        assert len(chain) == blocks
        assert [c[2] for c in chain] == [0x11] * (blocks - 1) + [0x91]
        assert [c[3] for c in chain] == list(range(blocks))
        for blk in chain[:-1]:
            assert tx(card, blk.hex()) == "9000"
        sw = tx(card, chain[-1].hex())
        assert sw == "6105"
        assert tx(card, "00C0000005") == "BF2D02A0009000"


def test_block_numbers_are_checked(card):
    tx(card, "00A4040C10" + ISDR)
    assert tx(card, "80E2110002BF22") == "9000"
    assert tx(card, "80E2910201" + "00") == "6A86"  # block 2 after block 0
    assert tx(card, "80E2910101" + "00") == "6A86"  # chain already aborted
    assert tx(card, "80E2110002BF22") == "9000"  # block 0 restarts
    assert tx(card, "80E2910101" + "00").startswith("61")
    assert tx(card, "80E2510003BF2200") == "6A86"  # P1 neither 11 nor 91
    assert tx(card, "80E2910000") == "6700"  # no data


def test_get_response_6cxx_and_nothing_waiting(card):
    tx(card, "00A4040C10" + ISDR)
    assert tx(card, "80E29100" + "06" + GET_EID) == "6115"
    assert tx(card, "00C0000000") == "6C15"  # Le 256 > 21 available: resend with Le=15
    assert tx(card, "00C0000020") == "6C15"
    assert tx(card, "00C0000015") == eid_response() + "9000"
    assert tx(card, "00C0000015") == "6985"  # nothing waiting any more
    assert tx(card, "80E29100" + "06" + GET_EID) == "6115"
    assert tx(card, "80CA00FE00") == "6D00"  # any other command drops the waiting response
    assert tx(card, "00C0000015") == "6985"
    assert tx(card, "00C0010015") == "6A86"
    assert tx(card, "00C00000") == "6700"


def test_manage_channel_up_to_19_channels_and_cla_forms(card):
    opened = [int(tx(card, "0070000001")[:2], 16) for _ in range(19)]
    assert opened == list(range(1, 20))
    assert tx(card, "0070000001") == "6A81"  # no free channel
    # channel 4..19 use the further interindustry class: 0x40|(n-4), STORE DATA 0xC0|(n-4)
    for n in (3, 4, 11, 19):
        cla = apdu.cla_for_channel(0x00, n)
        assert tx(card, f"{cla:02X}A4040C10" + ISDR) == "9000"
        pcla = apdu.cla_for_channel(0x80, n)
        assert tx(card, f"{pcla:02X}E29100" + "06" + GET_EID) == "6115"
        assert tx(card, f"{pcla:02X}C0000015") == eid_response() + "9000"
    assert tx(card, "0070801300") == "9000"  # close 19
    assert tx(card, "CFA4040C10" + ISDR) == "6881"  # channel 19 closed
    assert tx(card, "0070001300") == "9000"  # explicit open of 19 again
    assert tx(card, "0070001300") == "6985"  # already open
    assert tx(card, "0070001400") == "6881"  # channel 20 does not exist
    assert tx(card, "0070800000") == "6A86"  # the basic channel cannot be closed
    assert tx(card, "0070400100") == "6A86"


def test_status_words_for_malformed_and_unsupported(card):
    assert tx(card, "00") == "6700"  # shorter than a header
    assert tx(card, "00A40400") == "6700"  # case 1 SELECT: no AID
    assert tx(card, "00A4040010A000") == "6700"  # Lc says 16, 2 bytes follow
    assert tx(card, "0012000000") == "6D00"
    assert tx(card, "FFA4040000") == "6E00"
    assert tx(card, "A0A4000002" + "3F00") == "6E00"  # GSM class
    assert tx(card, "80A4040C10" + ISDR) == "6E00"  # SELECT with a proprietary class
    assert tx(card, "00E29100" + "06" + GET_EID) == "6E00"  # STORE DATA with an interindustry class
    assert tx(card, "0CA4040C10" + ISDR) == "6882"  # secure messaging
    assert tx(card, "10A4040C10" + ISDR) == "6884"  # command chaining
    assert tx(card, "02A4040C10" + ISDR) == "6881"  # channel 2 not open
    assert tx(card, "80E29100" + "06" + GET_EID) == "6985"  # no ISD-R selected on the basic channel
    tx(card, "00A4040C10" + ISDR)
    assert tx(card, "80E2910003BF7F00") == "6A88"  # unknown ES10 function
    assert tx(card, "80E2910004BF220500") == "6A80"  # not one TLV
    assert tx(card, "80E2910002BF22") == "6A80"  # truncated TLV
    assert tx(card, "80AA000005A903830107") == "9000"
    assert tx(card, "80AA000003A90383") == "6A80"
    assert tx(card, "80F2000C00") == "9000"  # STATUS, as modems poll it


def test_reset_closes_every_channel(card):
    assert tx(card, "0070000001") == "019000"
    tx(card, "01A4040C10" + ISDR)
    card.reset()
    assert tx(card, "81E29100" + "06" + GET_EID) == "6881"
    assert tx(card, "0070000001") == "019000"
    assert tx(card, "81E29100" + "06" + GET_EID) == "6985"  # the new channel has no selection


@pytest.mark.parametrize("style", ["lpac", "onomondo"])
async def test_ipa_es10_client_over_local_channel(card, style):
    """ipa.es10.Es10Client(LocalApduChannel(card)).call(...) works in both styles and block sizes."""
    from ipa.es10 import Es10Client

    channel = LocalApduChannel(card, style)
    channel.trace = []
    await channel.open()
    client = Es10Client(channel, block_size=120 if style == "lpac" else 255)
    assert await client.call(bytes.fromhex(GET_EID)) == bytes.fromhex(eid_response())
    commands = [c.hex().upper() for c, _ in channel.trace]
    if style == "lpac":
        assert commands[0] == "0070000001"
        assert commands[1] == "01A4040010" + ISDR
        assert commands[2].startswith("81C00000")
        assert commands[-1] == "81C0000015"
    else:
        assert commands[:3] == ["80AA000005A903830107", "0070000100", "01A4040410" + ISDR]
        assert commands[-1] == "01C0000015"
    assert commands[-2] == "81E2910006" + GET_EID
    await channel.close()
    assert channel.trace[-1][0].hex().upper() == "0070800100"


async def test_local_channel_on_a_high_channel(card):
    for _ in range(6):
        tx(card, "0070000001")  # channels 1..6 taken by someone else
    channel = LocalApduChannel(card)
    channel.trace = []
    await channel.open()
    assert channel.channel == 7
    from ipa.es10 import Es10Client

    assert await Es10Client(channel).call(bytes.fromhex(GET_EID)) == bytes.fromhex(eid_response())
    assert channel.trace[-2][0][:2] == bytes([0xC3, 0xE2])  # STORE DATA on channel 7
    assert channel.trace[-1][0][:2] == bytes([0xC3, 0xC0])  # lpac GET RESPONSE: proprietary class
