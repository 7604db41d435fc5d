"""APDU channels over AT+CSIM and AT+CCHO/CGLA against the virtual modem on a real pty, for every quirk."""

from __future__ import annotations

import hashlib
import json

import pytest

from firmware_bridge.channel import AtApduChannel
from firmware_bridge.errors import ApduTooLong, AtError, ChannelError, ChannelLost, PortGone, RouteUnavailable
from firmware_bridge.interfaces import ApduChannel
from ipa.es10 import Es10Client
from rsp import apdu as apdus
from rsp import tlv
from tests.firmware_bridge.conftest import engine_for
from tests.firmware_bridge.minicard import EID, ICCIDS, MiniCard, echo_command, enable_command

pytestmark = pytest.mark.timeout(60)

GET_EID = bytes.fromhex("BF3E035C015A")
PAYLOAD = hashlib.sha256(b"chain").digest() * 32  # 1 KB: 9 STORE DATA blocks of 120 bytes

# Quirks the bridge must survive on both routes (each alone; combinations below).
QUIRKS = [
    "",
    "hex-handles",
    "bare-ccho",
    "silent-probes",
    "probe-error",
    "unquoted",
    "no-length",
    "no-prefix",
    "lowercase",
    "unquoted,no-length,no-prefix",
    "echo",
    "urcs",
    "slow=0.02",
    "error-once-at=6",
    "csim-limit=250",
    "refresh-reset",
]


async def read_eid_and_chain(channel: AtApduChannel, card: MiniCard, block_size: int | None = None) -> None:
    es10 = Es10Client(channel, block_size or channel.recommended_block_size)
    answer = await es10.call(GET_EID, "GetEuiccData")
    assert tlv.require(answer, 0x5A).value == EID
    answer = await es10.call(echo_command(PAYLOAD), "echo")
    assert tlv.require(answer, 0x80).value == hashlib.sha256(PAYLOAD).digest()
    assert tlv.require(answer, 0x81).value == PAYLOAD  # 1 KB back through 61xx / GET RESPONSE rounds
    assert card.commands[-1] == echo_command(PAYLOAD)  # the card assembled exactly what was sent


@pytest.mark.parametrize("route", ["cgla", "csim"])
@pytest.mark.parametrize("quirks", QUIRKS)
async def test_eid_and_long_chain_through_every_quirk(modem_factory, route, quirks):
    card = MiniCard()
    vm = modem_factory(card, quirks)
    async with engine_for(vm.path) as at:
        channel = AtApduChannel(at, "generic", route)
        assert isinstance(channel, ApduChannel)
        await channel.open()
        assert channel.route == route
        await read_eid_and_chain(channel, card)
        await channel.close()
    stores = [a for a in card.log if a[1] == apdus.INS_STORE_DATA]
    assert len(stores) == 1 + 9  # GetEID + 9 blocks: an errored APDU was resent once, not delivered twice
    assert vm.core.injected_errors == (1 if "error-once-at" in quirks else 0)
    if route == "csim":
        ch = channel_of(card)
        assert {a[0] for a in stores} == {0x80 | ch}  # channel bits in CLA
        gets = [a for a in card.log if a[1] == apdus.INS_GET_RESPONSE]
        assert gets and {a[0] for a in gets} == {ch}  # GET RESPONSE on the same channel, CLA 0x
    else:
        assert {a[0] for a in stores} == {0x81}  # the modem patched the channel of the session into CLA


def channel_of(card: MiniCard) -> int:
    opened = [a for a in card.log if a[:4] == bytes.fromhex("00700000")]
    assert opened
    select = next(a for a in card.log if a[1] == apdus.INS_SELECT)
    return select[0] & 0x03


async def test_quirks_combined_on_both_routes(modem_factory):
    card = MiniCard()
    vm = modem_factory(card, "echo,urcs,hex-handles,unquoted,no-length,lowercase,error-once-at=9,slow=0.01")
    async with engine_for(vm.path) as at:
        for route in ("cgla", "csim"):
            channel = AtApduChannel(at, "generic", route)
            await channel.open()
            await read_eid_and_chain(channel, card)
            await channel.close()
            channel.detach()


async def test_auto_route_prefers_cgla_and_falls_back_to_csim(modem_factory):
    card = MiniCard()
    vm = modem_factory(card, "no-cgla")
    async with engine_for(vm.path) as at:
        channel = AtApduChannel(at, "generic")
        await channel.open()
        assert channel.route == "csim"
        assert isinstance(channel.route_failures["cgla"], AtError)
        assert channel.route_failures["cgla"].command == f'AT+CCHO="{apdus.ISDR_AID.hex().upper()}"'
        await read_eid_and_chain(channel, card)
        forced = AtApduChannel(at, "generic", "cgla")
        with pytest.raises(RouteUnavailable) as info:
            await forced.open()
        assert set(info.value.failures) == {"cgla"}


async def test_probe_answers_are_not_trusted(modem_factory):
    """Sierra: AT+CGLA=? fails while AT+CGLA= works; the channel never asks =? and uses CGLA."""
    vm = modem_factory(MiniCard(), "probe-error,hex-handles")
    async with engine_for(vm.path) as at:
        assert (await at.command("AT+CGLA=?", check=False)).final != "OK"
        channel = AtApduChannel(at, "generic")
        await channel.open()
        assert channel.route == "cgla" and len(channel.handle.split()[1]) == 16


async def test_csim_line_limit_gives_a_specific_error_and_a_smaller_block_size(modem_factory):
    card = MiniCard()
    vm = modem_factory(card, "csim-limit=250")
    async with engine_for(vm.path) as at:
        channel = AtApduChannel(at, "generic", "csim")
        await channel.open()
        with pytest.raises(ApduTooLong) as info:
            await Es10Client(channel, 255).call(echo_command(PAYLOAD))
        assert "+CME ERROR: 3" in str(info.value)
        assert channel.recommended_block_size == 120  # 250 hex characters: 125-byte APDU, 120 bytes of data
        await read_eid_and_chain(channel, card)


async def test_wavecom_takes_255_byte_blocks_within_its_522_character_limit(modem_factory):
    card = MiniCard()
    vm = modem_factory(card, model="G2150I")
    async with engine_for(vm.path) as at:
        channel = AtApduChannel(at)  # profile from ATI
        await channel.open()
        assert channel.profile.name == "wavecom" and channel.route == "csim"
        await read_eid_and_chain(channel, card, 255)  # 5 + 255 bytes = 520 hex characters


async def test_profile_line_limit_is_checked_before_sending(modem_factory):
    from firmware_bridge.profiles import get_profile

    card = MiniCard()
    vm = modem_factory(card, "csim-limit=250")
    async with engine_for(vm.path) as at:
        channel = AtApduChannel(at, get_profile("wavecom").with_overrides(max_apdu_hex=250))
        await channel.open()
        sent = len(card.log)
        with pytest.raises(ApduTooLong, match="at most 120 bytes"):
            await channel.transmit(apdus.build(0x80, 0xE2, 0x91, 0x00, bytes(200)))
        assert len(card.log) == sent  # nothing went to the modem
        assert channel.recommended_block_size == 120
        await read_eid_and_chain(channel, card)


@pytest.mark.parametrize("route", ["cgla", "csim"])
async def test_refresh_resets_the_sim_and_the_channel_reopens(modem_factory, route):
    card = MiniCard()
    vm = modem_factory(card, "refresh-reset=0.3", model="EG25-G")
    async with engine_for(vm.path) as at:
        channel = AtApduChannel(at, "generic", route)
        await channel.open()
        first = channel.handle
        es10 = Es10Client(channel)
        result = await es10.call(enable_command(ICCIDS[1]))
        assert result == bytes.fromhex("BF3103800100") and card.enabled == ICCIDS[1]
        # The modem resets the SIM after REFRESH (+CPIN / +QUSIM URCs); the old channel is gone.
        with pytest.raises(ChannelLost):
            for _ in range(50):  # the URC may still be on its way
                await es10.call(GET_EID)
        assert channel.reset_detected and card.resets == 1
        await channel.open()  # re-open and re-select, waiting through "+CME ERROR: 14" (SIM busy)
        assert not channel.reset_detected and channel.reopens == 1
        await read_eid_and_chain(channel, card)
        if route == "cgla":
            assert channel.handle != first


async def test_stale_session_after_reset_is_detected_even_without_urc(modem_factory):
    card = MiniCard()
    vm = modem_factory(card)
    async with engine_for(vm.path) as at:
        channel = AtApduChannel(at, "generic", "cgla")
        await channel.open()
        await at.command("AT+CFUN=0")  # someone else powers the SIM down; its URC marks the reset
        await at.command("AT+CFUN=1")
        with pytest.raises(ChannelLost):
            await channel.transmit(apdus.store_data_chain(GET_EID)[0])
        await channel.open()
        await read_eid_and_chain(channel, card)


async def test_csim_channel_gone_answers_6881(modem_factory):
    card = MiniCard()
    vm = modem_factory(card)
    async with engine_for(vm.path) as at:
        channel = AtApduChannel(at, "generic", "csim")
        await channel.open()
        card.reset()  # a reset the modem did not report
        with pytest.raises(ChannelLost) as info:
            await channel.transmit(apdus.store_data_chain(GET_EID)[0])
        assert info.value.sw == 0x6881 and channel.reset_detected
        await channel.open()
        await read_eid_and_chain(channel, card)


async def test_quectel_profile_cycles_cfun_after_enable(modem_factory):
    """EG25-G without REFRESH handling: the bridge makes the modem re-read the SIM (AT+CFUN=0/1)."""
    card = MiniCard()
    vm = modem_factory(card, model="EG25-G")
    async with engine_for(vm.path) as at:
        channel = AtApduChannel(at)
        await channel.open()
        assert channel.profile.name == "quectel"
        es10 = Es10Client(channel)
        assert await es10.call(enable_command(ICCIDS[0])) == bytes.fromhex("BF3103800102")  # already enabled
        assert card.resets == 0 and not channel.reset_detected
        assert await es10.call(enable_command(ICCIDS[1])) == bytes.fromhex("BF3103800100")
        assert card.resets == 1 and channel.reset_detected and channel.sim_refreshes == 1
        await channel.open()
        await read_eid_and_chain(channel, card)


async def test_6cxx_is_resent_with_the_right_le(modem_factory):
    card = MiniCard()
    vm = modem_factory(card)
    async with engine_for(vm.path) as at:
        for route in ("cgla", "csim"):
            channel = AtApduChannel(at, "generic", route)
            await channel.open()
            assert await channel.transmit(bytes.fromhex("00CA005A00")) == EID + b"\x90\x00"
            assert card.log[-1][1:] == bytes.fromhex("CA005A10")
            await channel.close()


async def test_get_response_class_from_the_profile(modem_factory):
    card = MiniCard()
    vm = modem_factory(card)
    async with engine_for(vm.path) as at:
        profile = AtApduChannel(at, "generic").profile.with_overrides(get_response_cla=0x80)
        channel = AtApduChannel(at, profile, "csim")
        await channel.open()
        await Es10Client(channel).call(GET_EID)
        ch = channel_of(card)
        assert card.log[-1][:2] == bytes([0x80 | ch, 0xC0])


async def test_channels_above_3_use_the_further_interindustry_class(modem_factory):
    card = MiniCard()
    card.MAX_CHANNEL = 19
    for n in range(1, 5):
        card.process(bytes([0, 0x70, 0, n, 0]))  # channels 1..4 taken by someone else
    vm = modem_factory(card)
    async with engine_for(vm.path) as at:
        channel = AtApduChannel(at, "generic", "csim")
        await channel.open()
        assert channel.handle == "channel 5"
        await Es10Client(channel).call(GET_EID)
        assert card.log[-2][:2] == bytes([0xC1, 0xE2])  # STORE DATA, proprietary class, channel 5
        assert card.log[-1][:2] == bytes([0x41, 0xC0])  # GET RESPONSE, interindustry class, channel 5


@pytest.mark.parametrize("route", ["cgla", "csim"])
async def test_a_channel_left_open_by_a_crashed_run_is_closed_by_the_next(modem_factory, route, tmp_path):
    card = MiniCard()
    for _ in range(2):
        card.process(bytes.fromhex("0070000001"))  # channels 1 and 2 belong to someone else
    vm = modem_factory(card)
    session_file = tmp_path / "fwbridge-session.json"
    async with engine_for(vm.path) as at:
        crashed = AtApduChannel(at, "generic", route, session_file=session_file)
        await crashed.open()  # takes channel 3, the last free one ...
        assert json.loads(session_file.read_text())["route"] == route
        crashed.detach()  # ... and is never closed
    async with engine_for(vm.path) as at:
        with pytest.raises(RouteUnavailable):  # without the record there is no free channel
            await AtApduChannel(at, "generic", route).open()
        channel = AtApduChannel(at, "generic", route, session_file=session_file)
        await channel.open()  # closes the recorded one, then opens
        await read_eid_and_chain(channel, card)
        assert set(card.channels) == {0, 1, 2, 3}  # the other program's channels were not touched
        await channel.close()
        assert not session_file.exists() and set(card.channels) == {0, 1, 2}


async def test_no_free_channel_is_a_clear_error(modem_factory):
    card = MiniCard()
    for _ in range(3):
        card.process(bytes.fromhex("0070000001"))
    vm = modem_factory(card)
    async with engine_for(vm.path) as at:
        with pytest.raises(RouteUnavailable) as info:
            await AtApduChannel(at, "generic", "csim").open()
        err = info.value.failures["csim"]
        assert err.sw == 0x6A81 and "no free logical channel" in str(err)
        assert err.command == 'AT+CSIM=10,"0070000001"'


async def test_basic_channel_only_modem(modem_factory):
    card = MiniCard()
    vm = modem_factory(card, model="MS2372h")
    async with engine_for(vm.path) as at:
        channel = AtApduChannel(at)
        await channel.open()
        assert channel.profile.name == "huawei-ms2372" and channel.handle == "channel 0"
        await read_eid_and_chain(channel, card)
        assert not any(a[1] == apdus.INS_MANAGE_CHANNEL for a in card.log)


@pytest.mark.parametrize(
    "model,profile,route",
    [
        ("generic", "generic", "cgla"),
        ("EG25-G", "quectel", "cgla"),
        ("EC20", "quectel-ec20", "csim"),
        ("SIM7600G-H", "simcom", "csim"),
        ("MC7455", "sierra", "cgla"),
        ("EM9191", "sierra-em9191", "csim"),
        ("FM350-GL", "fibocom", "cgla"),
        ("SARA-R410M", "u-blox", "cgla"),
        ("LE910C1", "telit", "cgla"),
        ("G2150I", "wavecom", "csim"),
        ("DW5821e", "dell-dw5821e", "csim"),
        ("MS2372h", "huawei-ms2372", "csim"),
    ],
)
async def test_profile_from_ati_and_the_route_it_picks(modem_factory, model, profile, route):
    card = MiniCard()
    vm = modem_factory(card, model=model)
    async with engine_for(vm.path) as at:
        channel = AtApduChannel(at)
        await channel.open()
        assert (channel.profile.name, channel.route) == (profile, route)
        await read_eid_and_chain(channel, card)
        await channel.close()


async def test_em9191_rejects_isdr_in_ccho_and_csim_is_used(modem_factory):
    card = MiniCard()
    vm = modem_factory(card, model="EM9191")
    async with engine_for(vm.path) as at:
        channel = AtApduChannel(at, "sierra")  # a profile that tries CGLA first
        await channel.open()
        assert channel.route == "csim"
        assert channel.route_failures["cgla"].final == "+CME ERROR: Parameters error"


async def test_one_channel_for_a_whole_package(modem_factory):
    card = MiniCard()
    vm = modem_factory(card)
    async with engine_for(vm.path) as at:
        channel = AtApduChannel(at, "generic", "cgla")
        await channel.open()
        for _ in range(3):
            await channel.open()  # no-op while nothing was reset
            await read_eid_and_chain(channel, card)
        assert sum(1 for a in card.log if a[1] == apdus.INS_MANAGE_CHANNEL) == 1


async def test_drop_mid_chain_fails_with_port_gone_and_nothing_hangs(modem_factory, tmp_path):
    card = MiniCard()
    vm = modem_factory(card, "drop-at=5", link=tmp_path / "modem")
    async with engine_for(str(tmp_path / "modem"), reopen_timeout=0.3) as at:
        channel = AtApduChannel(at, "generic", "csim")
        await channel.open()
        with pytest.raises(PortGone):
            await Es10Client(channel).call(echo_command(PAYLOAD))
        assert channel.reset_detected and not vm.plugged
        with pytest.raises(ChannelLost):
            await channel.transmit(apdus.store_data_chain(GET_EID)[0])


async def test_replug_mid_chain_then_reopen_works(modem_factory, tmp_path):
    card = MiniCard()
    vm = modem_factory(card, "replug-at=5", link=tmp_path / "modem")
    async with engine_for(str(tmp_path / "modem"), reopen_timeout=5.0) as at:
        channel = AtApduChannel(at, "generic", "cgla")
        await channel.open()
        with pytest.raises(PortGone):
            await Es10Client(channel).call(echo_command(PAYLOAD))
        await channel.open()  # the engine reopens the port behind the link, the channel re-selects
        assert at.generation == 2 and vm.core.sim_resets == 1  # re-enumeration reset the SIM too
        await read_eid_and_chain(channel, card)


async def test_silent_modem_mid_chain_times_out(modem_factory):
    card = MiniCard()
    vm = modem_factory(card, "hang-at=4")
    async with engine_for(vm.path, timeout=0.3, long_timeout=0.6) as at:
        channel = AtApduChannel(at, "generic", "cgla")
        await channel.open()
        from firmware_bridge.errors import AtTimeout

        with pytest.raises(AtTimeout) as info:
            await Es10Client(channel).call(echo_command(PAYLOAD))
        assert info.value.command.startswith("AT+CGLA=")


async def test_misuse_is_refused(modem_factory):
    vm = modem_factory(MiniCard())
    async with engine_for(vm.path) as at:
        channel = AtApduChannel(at, "generic", "csim")
        with pytest.raises(ChannelError, match="not open"):
            await channel.transmit(apdus.store_data_chain(GET_EID)[0])
        await channel.open()
        with pytest.raises(ValueError, match="basic-channel"):
            await channel.transmit(bytes.fromhex("81E2910006BF3E035C015A"))
        with pytest.raises(ValueError, match="not a command APDU"):
            await channel.transmit(b"\x80\xe2")
        with pytest.raises(ValueError):
            AtApduChannel(at, "generic", "pcsc")
        with pytest.raises(ValueError, match="unknown modem profile"):
            AtApduChannel(at, "nokia")
