"""Faults: the eIM drops the result after an enable with rollbackFlag (ProfileRollback), the modem resets the SIM
after an enable (re-open, still delivered), the process dies between LoadEuiccPackage and ProvideEimPackageResult
(delivered exactly once after restart: in-process crash points and a real SIGKILL of ``ipa run``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from euicc.card import SoftEuicc
from firmware_bridge.at import AtEngine
from firmware_bridge.channel import AtApduChannel
from firmware_bridge.virtual_modem import VirtualModem
from ipa import messages as m
from ipa.agent import Agent
from ipa.procedures import euicc_package
from ipa.procedures.eim_package_retrieval import Outcome
from ipa.state import StateStore
from rsp import asn1
from tests.ipa.conftest import ICCID_A, ICCID_B


async def crash_in_package(monkeypatch, agent, point: str) -> None:
    """The agent's next poll runs the queued package and the IPA "crashes" at ``point`` (``euicc_package.crash_hook``
    raises); the hook is gone afterwards, as in the next process. Nothing is closed cleanly."""

    def crash(at):
        if at == point:
            raise euicc_package.CrashPoint(at)

    monkeypatch.setattr(euicc_package, "crash_hook", crash)
    with pytest.raises(euicc_package.CrashPoint):
        await agent.poll_once()
    monkeypatch.setattr(euicc_package, "crash_hook", None)


@contextlib.asynccontextmanager
async def restarted(rig) -> AsyncIterator[Agent]:
    """The next process: the card reloaded from its state file, a new agent started (closed on exit)."""
    rig.reload_card()
    async with rig.started() as again:
        yield again


ROOT = Path(__file__).resolve().parents[2]


def replace_state(path: str, data: bytes | None) -> None:
    """Lose (None) or damage the IPA state file, as a broken SD card would."""
    if data is None:
        Path(path).unlink()
    else:
        Path(path).write_bytes(data)


def states(card) -> dict[str, int]:
    return {m.iccid_to_str(p.iccid): p.state for p in card.state.profiles}


def epr_results(der: bytes) -> list[tuple[str, int]]:
    v = asn1.decode("EsipaMessageFromIpaToEim", der)[1]["eimPackageResult"]
    epr = v[1]["euiccPackageResult"] if v[0] == "ePRAndNotifications" else v[1]
    data = epr[1]["euiccPackageResultDataSigned"]
    return [(r[0], r[1]) for r in data["euiccResult"]]


@pytest.mark.parametrize("binding", ["http", "coap"])
async def test_unreachable_eim_after_enable_with_rollback_flag_rolls_back(make_rig, binding):
    rig = await make_rig(binding)
    rig.config.poll.rollback_after = 2
    agent = rig.agent()
    await agent.start()
    try:
        await agent.poll_once()
        # the new profile has no way to the eIM: every ProvideEimPackageResult is dropped while B is enabled
        rig.peer.drop = lambda name, der: name == "provideEimPackageResult" and states(rig.card)[ICCID_B] == 1
        rig.peer.queue(rig.peer.psmo(rig.peer.enable(ICCID_B, rollback=True)))
        r = await agent.poll_once()
        assert r.outcome is Outcome.FAILED and states(rig.card) == {ICCID_A: 0, ICCID_B: 1}
        assert len(agent.store.state.results) == 1
        r = await agent.poll_once()  # second failed delivery -> ProfileRollback
        assert states(rig.card) == {ICCID_A: 1, ICCID_B: 0}
        await agent.poll_once()  # back on A: the rollback's result goes through
        assert len(rig.peer.results) == 1 and rig.peer.epr_verified == [True]
        assert epr_results(rig.peer.results[0]) == [("enableResult", 0), ("rollbackResult", 0)]
        assert agent.store.state.results == [] and rig.card.state.notifications == []
    finally:
        await agent.close()


async def test_rollback_not_used_without_flag(make_rig):
    rig = await make_rig("http")
    rig.config.poll.rollback_after = 1
    agent = rig.agent()
    await agent.start()
    try:
        rig.peer.drop = lambda name, der: name == "provideEimPackageResult" and states(rig.card)[ICCID_B] == 1
        rig.peer.queue(rig.peer.psmo(rig.peer.enable(ICCID_B)))
        for _ in range(3):
            await agent.poll_once()
        assert states(rig.card) == {ICCID_A: 0, ICCID_B: 1} and len(agent.store.state.results) == 1
    finally:
        await agent.close()


async def test_modem_resets_sim_after_enable_result_still_delivered(make_rig):
    """Through the virtual modem on a real pseudo-terminal: REFRESH resets the SIM, logical channels are lost."""
    rig = await make_rig("http")
    with VirtualModem(rig.card, quirks="refresh-reset=0.3") as vm:
        engine = AtEngine(vm.path)
        await engine.open()
        channel = AtApduChannel(engine, route="auto")
        from ipa.agent import Agent

        agent = Agent(rig.config, channel)
        await agent.start()
        try:
            rig.peer.queue(rig.peer.psmo(rig.peer.enable(ICCID_B)))
            r = await agent.poll_once()
            assert r.package == "euiccPackageRequest"
            for _ in range(5):
                if rig.peer.results:
                    break
                await asyncio.sleep(0.3)
                await agent.poll_once()
            assert states(rig.card) == {ICCID_A: 0, ICCID_B: 1}
            assert len(rig.peer.results) == 1 and rig.peer.epr_verified == [True]
            assert agent.es10.reopens >= 1
            assert rig.card.state.notifications == []
        finally:
            await agent.close()
            await engine.close()


@pytest.mark.parametrize("point", ["before_load", "after_load", "after_queue"])
async def test_crash_between_load_and_provide_delivered_exactly_once(make_rig, point, monkeypatch):
    rig = await make_rig("http")
    agent = rig.agent()
    await agent.start()

    rig.peer.queue(rig.peer.psmo(rig.peer.enable(ICCID_B)))
    await crash_in_package(monkeypatch, agent, point)
    # the process is gone: nothing is closed cleanly, the card keeps its state file
    assert rig.peer.results == []
    async with restarted(rig) as again:
        await again.poll_once()
        await again.poll_once()
        assert len(rig.peer.results) == 1 and rig.peer.epr_verified == [True]
        assert epr_results(rig.peer.results[0]) == [("enableResult", 0)]
        assert states(rig.card) == {ICCID_A: 0, ICCID_B: 1}
        assert again.store.state.results == [] and again.store.state.inflight is None
        assert rig.card.state.notifications == []


async def test_cancelled_during_delivery_then_restart_delivers_once(make_rig):
    """Cancellation (as on SIGKILL of the event loop's task) while the eIM holds ProvideEimPackageResult."""
    rig = await make_rig("http")
    gate = asyncio.Event()
    original = rig.peer.handle

    async def slow(der):
        if der[:2] == b"\xbf\x50" and not gate.is_set():
            gate.set()
            await asyncio.sleep(30)
        return await original(der)

    rig.peer.handle = slow
    agent = rig.agent()
    await agent.start()
    rig.peer.queue(rig.peer.psmo(rig.peer.enable(ICCID_B)))
    task = asyncio.create_task(agent.poll_once())
    await asyncio.wait_for(gate.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(StateStore(rig.config.ipa.state_file).load().results) == 1
    async with restarted(rig) as again:
        await again.poll_once()
        assert len(rig.peer.results) == 1 and again.store.state.results == []


async def test_sigkill_of_ipa_run_then_restart_delivers_exactly_once(make_rig, tmp_path):
    """A real ``ipa run`` process, killed with SIGKILL while its result is queued (the eIM refused it), restarted."""
    rig = await make_rig("http")
    agent = rig.agent()
    await agent.start()  # AddInitialEim through the IPA, then hand the card over to the subprocess
    await agent.close()
    rig.peer.drop = lambda name, der: name == "provideEimPackageResult"
    rig.peer.queue(rig.peer.psmo(rig.peer.enable(ICCID_B)))
    env = dict(
        os.environ,
        IPA_EIM_URL=rig.config.eim.url,
        IPA_IPA_STATE_FILE=rig.config.ipa.state_file,
        IPA_POLL_INTERVAL="0.2",
        IPA_POLL_MIN_INTERVAL="0.1",
        IPA_POLL_MAX_BACKOFF="0.2",
    )
    cmd = [sys.executable, "-m", "ipa.cli", "--card", str(rig.card.state_path), "run"]

    def start():
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    proc = start()
    try:
        deadline = time.monotonic() + 30
        while not any(r.name == "provideEimPackageResult" for r in rig.peer.received):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert rig.peer.results == []
        assert len(StateStore(rig.config.ipa.state_file).load().results) == 1
        assert states(SoftEuicc.load(rig.card.state_path)) == {ICCID_A: 0, ICCID_B: 1}
        rig.peer.drop = None
        proc = start()
        deadline = time.monotonic() + 30
        while not rig.peer.results:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # several more polls: nothing delivered twice
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0  # clean shutdown on SIGTERM
        assert len(rig.peer.results) == 1 and rig.peer.epr_verified == [True]
        assert StateStore(rig.config.ipa.state_file).load().results == []
        assert SoftEuicc.load(rig.card.state_path).state.notifications == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_lost_state_file_card_epr_list_is_the_second_source(make_rig, monkeypatch):
    """Crash after the result was queued, then the state file is lost: the card's pending EPR list still yields the
    result, delivered once; results already delivered are not sent again."""
    rig = await make_rig("http")
    agent = rig.agent()
    await agent.start()
    rig.peer.queue(rig.peer.psmo(rig.peer.list_profiles()))
    await agent.poll_once()  # delivered and acknowledged normally
    rig.peer.ack = False  # the eIM stops acknowledging: its results stay on the card
    rig.peer.queue(rig.peer.psmo(rig.peer.list_profiles()))
    await agent.poll_once()  # delivered, not acknowledged: stays on the card, remembered as delivered
    assert len(rig.peer.results) == 2

    rig.peer.queue(rig.peer.psmo(rig.peer.enable(ICCID_B)))
    await crash_in_package(monkeypatch, agent, "after_queue")
    # restart with the state intact: the unacknowledged result of package 2 is not sent again
    rig.reload_card()
    again = rig.agent()
    await again.start()
    await again.poll_once()
    assert len(rig.peer.results) == 3 and epr_results(rig.peer.results[2]) == [("enableResult", 0)]
    # now the state file is lost: what was delivered but never acknowledged cannot be told from what was never
    # delivered, so those come again (no loss; the eIM deduplicates by counterValue/seqNumber)
    replace_state(rig.config.ipa.state_file, None)
    rig.reload_card()
    third = rig.agent()
    await third.start()
    await third.poll_once()
    assert len(rig.peer.results) == 3 + 2  # without the state the unacknowledged ones (2 and 3) are re-sent
    await third.close()


async def test_lost_state_file_after_crash_delivers_from_the_card(make_rig, monkeypatch):
    rig = await make_rig("http")
    agent = rig.agent()
    await agent.start()

    rig.peer.queue(rig.peer.psmo(rig.peer.enable(ICCID_B)))
    await crash_in_package(monkeypatch, agent, "after_queue")
    replace_state(rig.config.ipa.state_file, b"\xff garbage")  # damaged state file
    async with restarted(rig) as again:
        await again.poll_once()
        await again.poll_once()
        assert len(rig.peer.results) == 1 and rig.peer.epr_verified == [True]
        assert epr_results(rig.peer.results[0]) == [("enableResult", 0)]
        assert rig.peer.result_kinds() == ["euiccPackageResult"]  # the EPR from the card's list...
        assert len(rig.peer.notifications) == 2  # ...and the disable/enable notifications by HandleNotification
        assert rig.card.state.notifications == []


class FlakyChannel:
    """Wraps a channel; the listed transmit calls fail like a modem that vanished for a moment (or answer garbage)."""

    def __init__(self, inner, fail_at: set[int], garbage_at: set[int] = frozenset()) -> None:
        self.inner, self.fail_at, self.garbage_at, self.n = inner, fail_at, garbage_at, 0

    @property
    def reset_detected(self) -> bool:
        return self.inner.reset_detected

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def transmit(self, apdu: bytes) -> bytes:
        self.n += 1
        if self.n in self.fail_at:
            raise OSError(5, "Input/output error")
        answer = await self.inner.transmit(apdu)
        if self.n in self.garbage_at:
            return b"\xbf\x2b\x05\x01\x90\x00"  # truncated TLV with a good status word
        return answer


async def test_agent_keeps_serving_after_modem_io_errors_and_garbage(make_rig):
    rig = await make_rig("http")
    from ipa.agent import Agent

    boot = rig.agent()
    await boot.start()  # provision the eIM
    await boot.poll_once()
    await boot.close()
    flaky = FlakyChannel(rig.channel, set(), set())
    agent = Agent(rig.config, flaky)
    await agent.start()
    try:
        flaky.fail_at = {flaky.n + 1}
        r = await agent.poll_once()
        assert r.outcome is Outcome.FAILED and "Input/output error" in r.detail
        flaky.garbage_at = {flaky.n + 1}
        r = await agent.poll_once()
        assert r.outcome is Outcome.FAILED
        rig.peer.queue(rig.peer.psmo(rig.peer.enable(ICCID_B)))
        r = await agent.poll_once()
        assert r.package == "euiccPackageRequest" and rig.peer.result_kinds() == ["ePRAndNotifications"]
    finally:
        await agent.close()


@pytest.mark.parametrize("point", ["before_load", "after_load"])
async def test_recovery_without_transaction_id_never_takes_an_older_result(make_rig, point, monkeypatch):
    """Issue 17: a package without eimTransactionId (OPTIONAL) crashes while the card still holds an OLDER
    undelivered result of the same eIM (lower counter, no transaction id either), one the state file does not know
    (it was produced behind the IPA's back). Recovery may only take the result whose counterValue is the package's;
    taking the older one would report it as this package's result with this package's notifications, and (crash
    before the load) leave this package never executed."""
    rig = await make_rig("http")
    agent = rig.agent()
    await agent.start()
    await agent.poll_once()  # idle poll: the start-up sweep of the card's EPR list is done
    older = rig.peer.psmo(rig.peer.list_profiles(), with_txid=False)  # counter 1
    epr_older = await agent.es10.load_euicc_package(older)  # behind the IPA's back: the state never saw it
    assert epr_older.eim_transaction_id is None and epr_older.counter_value == 1

    rig.peer.queue(rig.peer.psmo(rig.peer.enable(ICCID_B), with_txid=False))  # counter 2, no eimTransactionId
    await crash_in_package(monkeypatch, agent, point)
    inflight = StateStore(rig.config.ipa.state_file).load().inflight
    assert inflight is not None and inflight["counter"] == 2 and inflight["txid"] is None
    async with restarted(rig) as again:
        await again.poll_once()
        await again.poll_once()
        # the package of counter 2 ran exactly once and its own result went to the eIM; the older result of
        # counter 1 went too, as itself (the card's pending list is the second source of truth), once
        assert states(rig.card) == {ICCID_A: 0, ICCID_B: 1}
        # each result once, as itself: the enable's own notifications (disable A, enable B) ride with its result,
        # the older result goes alone (taking the older one would send it with the enable's notifications)
        sent = sorted(
            (epr_counter(d), kind, epr_results(d)[0][0])
            for d, kind in zip(rig.peer.results, rig.peer.result_kinds(), strict=True)
        )
        assert sent == [
            (1, "euiccPackageResult", "listProfileInfoResult"),
            (2, "ePRAndNotifications", "enableResult"),
        ]
        assert rig.peer.epr_verified == [True, True]
        assert again.store.state.results == [] and again.store.state.inflight is None
        assert rig.card.state.notifications == []


def epr_counter(der: bytes) -> int:
    v = asn1.decode("EsipaMessageFromIpaToEim", der)[1]["eimPackageResult"]
    epr = v[1]["euiccPackageResult"] if v[0] == "ePRAndNotifications" else v[1]
    return epr[1]["euiccPackageResultDataSigned"]["counterValue"]
