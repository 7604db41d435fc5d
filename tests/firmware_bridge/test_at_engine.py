"""The AT engine through real pseudo-terminals: deadlines, silent and garbage modems, URCs, locks, lost ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import select
import threading
import tty

import pytest

from firmware_bridge.errors import AtError, AtProtocolError, AtTimeout, PortBusy, PortGone
from tests.firmware_bridge.conftest import engine_for

pytestmark = pytest.mark.timeout(60)

HANG_GUARD = 15.0  # an outer bound that only proves nothing hangs; the deadlines under test are far shorter


@contextlib.contextmanager
def raw_pty(answer=None):
    """A pty whose far end is a thread: ``answer(data) -> bytes | None`` (None: stay silent)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            r, _, _ = select.select([master], [], [], 0.05)
            if master in r:
                try:
                    data = os.read(master, 4096)
                except OSError:
                    return
                out = answer(data) if answer else None
                if out:
                    os.write(master, out)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield os.ttyname(slave)
    finally:
        stop.set()
        t.join(2)
        os.close(master)
        os.close(slave)


async def test_silent_modem_times_out_with_the_command_named():
    with raw_pty() as path:
        async with engine_for(path, timeout=0.3) as at:
            with pytest.raises(AtTimeout) as info:
                await asyncio.wait_for(at.command("AT"), HANG_GUARD)
            assert info.value.command == "AT" and info.value.timeout == 0.3
            # The next command (after the resync attempt) fails the same way, it does not hang.
            with pytest.raises(AtTimeout):
                await asyncio.wait_for(at.command('AT+CSIM=10,"0070000001"', expect="+CSIM:"), HANG_GUARD)


async def test_garbage_without_final_result_times_out_and_shows_what_came():
    rng = random.Random(7)

    def junk(_data):
        return bytes(rng.choice(b"\x00\x80\xffZQ#\r\n9") for _ in range(50))

    with raw_pty(junk) as path:
        async with engine_for(path, timeout=0.3) as at:
            with pytest.raises(AtTimeout) as info:
                await asyncio.wait_for(at.command("AT+CGMM"), HANG_GUARD)
            assert info.value.lines  # the garbage is reported, not silently eaten


async def test_garbage_then_ok_is_a_protocol_error_for_an_apdu(modem_factory):
    from firmware_bridge.at_parser import parse_apdu_answer

    vm = modem_factory(quirks="garbage-at=1")
    async with engine_for(vm.path) as at:
        resp = await at.command('AT+CSIM=10,"0070000001"', expect="+CSIM:")
        with pytest.raises(AtProtocolError, match="no \\+CSIM: answer"):
            parse_apdu_answer(resp, "+CSIM:")


async def test_error_finals_raise_at_error_with_command_and_line(modem_factory):
    vm = modem_factory(quirks="csim-limit=20")
    async with engine_for(vm.path) as at:
        with pytest.raises(AtError) as info:
            await at.command('AT+CSIM=22,"81E2910006BF3E035C015A"', expect="+CSIM:")
        assert info.value.cme == 3 and info.value.command.startswith("AT+CSIM=22")
        await at.command("AT+CMEE=2")
        with pytest.raises(AtError) as info:
            await at.command('AT+CSIM=22,"81E2910006BF3E035C015A"', expect="+CSIM:")
        assert info.value.final == "+CME ERROR: operation not allowed"
        await at.command("AT+CMEE=0")
        with pytest.raises(AtError) as info:
            await at.command('AT+CSIM=22,"81E2910006BF3E035C015A"', expect="+CSIM:")
        assert info.value.bare
        resp = await at.command("AT+NOSUCH", check=False)
        assert resp.final == "ERROR"


async def test_echo_and_urcs_between_command_and_answer(modem_factory):
    vm = modem_factory(quirks="echo,urcs")
    async with engine_for(vm.path) as at:
        queue, unsubscribe = at.urc_queue()
        resp = await at.command("AT+CGMM", expect="+CGMM:")
        assert resp.lines == ("VM-1",)
        resp = await at.command("AT+CEREG?", expect="+CEREG:")
        assert resp.with_prefix("+CEREG:") == ["+CEREG: 0,1"]  # the injected +CEREG URC is not here
        seen = [queue.get_nowait() for _ in range(queue.qsize())]
        assert '+QIND: "csq",28,99' in seen and "+CREG: 1" in seen
        assert not any(s.startswith("AT") for s in seen)  # echo is never a URC
        unsubscribe()


async def test_urcs_while_idle_reach_listeners(modem_factory):
    vm = modem_factory()
    async with engine_for(vm.path) as at:
        got: list[str] = []
        at.add_urc_listener(got.append)
        await at.command("AT")
        vm.inject("+CEREG: 5")
        vm.inject("RDY")
        for _ in range(100):
            if len(got) == 2:
                break
            await asyncio.sleep(0.02)
        assert got == ["+CEREG: 5", "RDY"]


async def test_late_answer_after_a_timeout_is_not_taken_for_the_next(modem_factory):
    vm = modem_factory(quirks="slow=0.6")
    async with engine_for(vm.path, timeout=0.2) as at:
        with pytest.raises(AtTimeout):
            await at.command('AT+CSIM=10,"0070000001"', expect="+CSIM:")
        # Its answer (+CSIM: 6,"019000") arrives late; the next command must get its own answer.
        resp = await at.command("AT+CGMM", timeout=3.0)
        assert resp.lines == ("VM-1",)
        resp = await at.command("ATI", timeout=3.0)
        assert resp.lines[0] == "Virtual Modem" and not any("+CSIM" in ln for ln in resp.lines)


async def test_long_mode_deadline(modem_factory):
    vm = modem_factory(quirks="slow=0.5")
    async with engine_for(vm.path, timeout=0.2, long_timeout=5.0) as at:
        with at.long_mode():
            resp = await at.command('AT+CSIM=10,"0070000001"', expect="+CSIM:")
        assert resp.ok
        assert at.default_timeout == 0.2


async def test_port_is_locked_exclusively(modem_factory):
    vm = modem_factory()
    async with engine_for(vm.path) as first:
        await first.command("AT")
        with pytest.raises(PortBusy, match="ID_MM_PORT_IGNORE"):
            await engine_for(vm.path).open()
        await first.command("AT")
    async with engine_for(vm.path) as again:  # released on close
        await again.command("AT")


async def test_missing_port():
    with pytest.raises(PortGone):
        await engine_for("/dev/does-not-exist-fwbridge").open()


async def test_drop_mid_command_fails_fast_and_stays_gone(modem_factory, tmp_path):
    vm = modem_factory(quirks="drop-at=2", link=tmp_path / "modem")
    async with engine_for(str(tmp_path / "modem"), reopen_timeout=0.5) as at:
        events: list[str] = []
        at.add_port_listener(events.append)
        await at.command('AT+CSIM=10,"0070000001"', expect="+CSIM:")
        with pytest.raises(PortGone):
            await asyncio.wait_for(at.command('AT+CSIM=10,"0070000001"', expect="+CSIM:"), HANG_GUARD)
        assert events == ["lost"] and not vm.plugged
        # The device is not coming back (its pty is closed): reopen gives up after reopen_timeout.
        os.unlink(tmp_path / "modem")
        with pytest.raises(PortGone, match="not back"):
            await asyncio.wait_for(at.command("AT"), HANG_GUARD)


async def test_device_comes_back_after_reenumeration(modem_factory, tmp_path):
    vm = modem_factory(link=tmp_path / "modem")
    async with engine_for(str(tmp_path / "modem"), reopen_timeout=5.0) as at:
        events: list[str] = []
        at.add_port_listener(events.append)
        await at.command("AT")
        vm.replug()
        for _ in range(200):
            if events:
                break
            await asyncio.sleep(0.01)
        resp = await at.command("AT+CGMM")  # reopens the (new) pty behind the same link
        assert resp.lines == ("VM-1",)
        assert events == ["lost", "reopened"] and at.generation == 2


async def test_byte_counters_match_on_both_ends(modem_factory):
    vm = modem_factory(baud=9600)
    async with engine_for(vm.path) as at:
        for _ in range(3):
            await at.command('AT+CSIM=10,"0070000001"', expect="+CSIM:")
        await at.command("ATI")
    assert vm.stats.bytes_in == at.bytes_out
    assert vm.stats.bytes_out == at.bytes_in
    assert vm.stats.wire_seconds == pytest.approx((at.bytes_in + at.bytes_out) * 10 / 9600)


async def test_a_cancelled_command_does_not_leave_its_answer_to_the_next(modem_factory):
    vm = modem_factory(quirks="slow=0.4")
    async with engine_for(vm.path) as at:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(at.command('AT+CSIM=10,"0070000001"', expect="+CSIM:"), 0.1)
        resp = await at.command('AT+CSIM=10,"0070800100"', expect="+CSIM:", timeout=3.0)
        assert resp.with_prefix("+CSIM:") == ['+CSIM: 4,"9000"']  # its own answer (close), not "019000"
