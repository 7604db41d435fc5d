"""The blocking AT engine (no event loop, rsp.loopless) through real pseudo-terminals: the AtEngine's rules."""

from __future__ import annotations

import os
import time

import pytest

from firmware_bridge.at_blocking import BlockingAtEngine
from firmware_bridge.channel import AtApduChannel
from firmware_bridge.errors import AtError, AtTimeout, PortBusy, PortGone
from rsp import apdu, loopless
from tests.firmware_bridge.conftest import SHORT
from tests.firmware_bridge.minicard import MiniCard
from tests.firmware_bridge.test_at_engine import raw_pty
from tests.firmware_bridge.test_channel import QUIRKS, read_eid_and_chain

pytestmark = pytest.mark.timeout(60)


def engine(path: str, **kwargs) -> BlockingAtEngine:
    kwargs.setdefault("timeout", SHORT)
    kwargs.setdefault("long_timeout", 3 * SHORT)
    kwargs.setdefault("reopen_timeout", SHORT)
    return BlockingAtEngine(path, **kwargs)


def test_echo_and_urcs_between_command_and_answer(modem_factory):
    vm = modem_factory(quirks="echo,urcs")
    at = engine(vm.path)
    seen: list[str] = []
    at.add_urc_listener(seen.append)

    async def session():
        async with at:
            return await at.command("AT+CGMM", expect="+CGMM:"), await at.command("AT+CEREG?", expect="+CEREG:")

    cgmm, cereg = loopless.run(session())
    assert cgmm.lines == ("VM-1",)
    assert cereg.with_prefix("+CEREG:") == ["+CEREG: 0,1"]  # the injected +CEREG URC is not here
    assert '+QIND: "csq",28,99' in seen and "+CREG: 1" in seen
    assert not any(s.startswith("AT") for s in seen)  # echo is never a URC


def test_byte_counters_match_on_both_ends(modem_factory):
    vm = modem_factory(baud=9600)
    at = engine(vm.path)

    async def session():
        async with at:
            for _ in range(3):
                await at.command('AT+CSIM=10,"0070000001"', expect="+CSIM:")
            await at.command("ATI")

    loopless.run(session())
    assert vm.stats.bytes_in == at.bytes_out
    assert vm.stats.bytes_out == at.bytes_in


def test_silent_modem_times_out_with_the_command_named():
    with raw_pty() as path:
        at = engine(path, timeout=0.3)

        async def session():
            async with at:
                await at.command("AT+CGMM")

        t = time.monotonic()
        with pytest.raises(AtTimeout, match="AT\\+CGMM"):
            loopless.run(session())
        assert time.monotonic() - t < SHORT


def test_late_answer_after_a_timeout_is_not_taken_for_the_next(modem_factory):
    vm = modem_factory(quirks="slow=0.6")
    at = engine(vm.path, timeout=0.2)

    async def session():
        async with at:
            with pytest.raises(AtTimeout):
                await at.command('AT+CSIM=10,"0070000001"', expect="+CSIM:")
            return await at.command("AT+CGMM", timeout=3.0), await at.command("ATI", timeout=3.0)

    cgmm, ati = loopless.run(session())
    assert cgmm.lines == ("VM-1",)
    assert ati.lines[0] == "Virtual Modem" and not any("+CSIM" in ln for ln in ati.lines)


def test_error_final_raises_at_error(modem_factory):
    vm = modem_factory()

    async def session():
        async with engine(vm.path) as at:
            await at.command("AT+NOSUCH")

    with pytest.raises(AtError, match="AT\\+NOSUCH"):
        loopless.run(session())


def test_port_is_locked_exclusively_and_released_on_close(modem_factory):
    vm = modem_factory()
    first = engine(vm.path)
    loopless.run(first.open())
    with pytest.raises(PortBusy, match="ID_MM_PORT_IGNORE"):
        loopless.run(engine(vm.path).open())
    loopless.run(first.close())
    again = engine(vm.path)
    loopless.run(again.open())
    assert loopless.run(again.command("AT")).ok
    loopless.run(again.close())


def test_missing_port():
    with pytest.raises(PortGone):
        loopless.run(engine("/dev/does-not-exist-fwbridge").open())


def test_drop_mid_command_fails_fast_and_stays_gone(modem_factory, tmp_path):
    vm = modem_factory(quirks="drop-at=2", link=tmp_path / "modem")
    at = engine(str(tmp_path / "modem"), reopen_timeout=0.5)
    events: list[str] = []
    at.add_port_listener(events.append)
    loopless.run(at.open())
    loopless.run(at.command('AT+CSIM=10,"0070000001"', expect="+CSIM:"))
    t = time.monotonic()
    with pytest.raises(PortGone):
        loopless.run(at.command('AT+CSIM=10,"0070000001"', expect="+CSIM:"))
    assert time.monotonic() - t < SHORT  # at once, not at the deadline
    assert events == ["lost"]
    deadline = time.monotonic() + 5  # the modem's thread marks itself unplugged after it closed the line
    while vm.plugged and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not vm.plugged
    os.unlink(tmp_path / "modem")
    with pytest.raises(PortGone, match="not back"):
        loopless.run(at.command("AT"))


@pytest.mark.parametrize("route", ["cgla", "csim"])
@pytest.mark.parametrize("quirks", QUIRKS)
def test_eid_and_long_chain_through_every_quirk_without_a_loop(modem_factory, route, quirks):
    card = MiniCard()
    vm = modem_factory(card, quirks)
    at = engine(vm.path)

    async def session():
        async with at:
            channel = AtApduChannel(at, "generic", route)
            await channel.open()
            assert channel.route == route
            await read_eid_and_chain(channel, card)  # the same checks as the asyncio engine's (test_channel.py)
            await channel.close()

    loopless.run(session())
    stores = [a for a in card.log if a[1] == apdu.INS_STORE_DATA]
    assert len(stores) == 1 + 9  # GetEID + 9 blocks: an errored APDU was resent once, not delivered twice
