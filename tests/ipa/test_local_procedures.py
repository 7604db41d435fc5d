"""Notification delivery, eIM push (MQTT), fallback / return from fallback and immediate enable."""

from __future__ import annotations

import asyncio

import pytest

from euicc import notifications as card_notifications
from euicc.state import EVENT_DISABLE
from ipa import messages as m
from ipa.codes import StateChangeCause
from ipa.procedures.eim_package_retrieval import Outcome
from rsp import asn1, tlv
from tests.ipa.conftest import EID, ICCID_A, ICCID_B


def add_notifications(card, count: int) -> list[int]:
    seqs = [
        card_notifications.other_signed(card.ctx, EVENT_DISABLE, "smdp.lab.example", m.iccid_to_bytes(ICCID_A)).seq
        for _ in range(count)
    ]
    card.save()
    return seqs


def delivered_seqs(peer) -> list[int]:
    out = []
    for der in peer.notifications:
        kind, _alt = asn1.decode("EsipaMessageFromIpaToEim", der)[1]
        assert kind == "pendingNotification"
        out.append(m.parse_pending_notification(tlv.children(tlv.find(der, 0xA0))[0]).seq_number)
    return out


@pytest.mark.parametrize(
    ("binding", "device"), [("http", "local"), ("http", "modem"), ("coap", "modem"), ("mqtt", "modem")]
)
async def test_notifications_delivered_then_removed_seq0_included(make_rig, binding, device):
    rig = await make_rig(binding, device=device)
    assert add_notifications(rig.card, 3) == [0, 1, 2]
    state = {"dropped": 0}

    def drop(name, der):  # the eIM is unreachable for the notification with seq 1, once
        if name == "handleNotificationEsipa" and state["dropped"] == 0:
            seq = m.parse_pending_notification(tlv.children(tlv.find(der, 0xA0))[0]).seq_number
            if seq == 1:
                state["dropped"] += 1
                return True
        return False

    rig.peer.drop = drop
    agent = rig.agent()
    await agent.start()
    try:
        r = await agent.poll_once()
        if binding == "mqtt":  # no answer on MQTT is not a failure (PUBACK): all three went to the broker
            assert delivered_seqs(rig.peer) == [0, 2] and r.outcome is Outcome.IDLE
        else:
            assert r.outcome is Outcome.IDLE
            assert delivered_seqs(rig.peer) == [0]
            assert sorted(n.seq for n in rig.card.state.notifications) == [1, 2]  # kept: not delivered
            await agent.poll_once()
            assert delivered_seqs(rig.peer) == [0, 1, 2]
        assert rig.card.state.notifications == []
    finally:
        await agent.close()


async def test_mqtt_push_answered_then_result_provided(make_rig):
    rig = await make_rig("mqtt")
    agent = rig.agent()
    await agent.start()
    stop = asyncio.Event()
    try:
        await agent.poll_once()  # connects (persistent session, subscribed to the down topic)
        pkg = tlv.encode(0xBF4E, rig.peer.psmo(rig.peer.enable(ICCID_B)))
        runner = asyncio.create_task(agent.run(stop))
        rig.config.poll.interval = 30  # idle: only the push can wake the agent
        await asyncio.sleep(0.3)
        await rig.server.push(EID, pkg)
        for _ in range(200):
            if rig.peer.results:
                break
            await asyncio.sleep(0.05)
        assert rig.server.answers_to_pushes[0] == (m.transfer_eim_package_response(m.EIM_PACKAGE_RECEIVED), b"push-1")
        assert rig.peer.result_kinds() == ["ePRAndNotifications"] and rig.peer.epr_verified == [True]
        assert {m.iccid_to_str(p.iccid): p.state for p in rig.card.state.profiles} == {ICCID_A: 0, ICCID_B: 1}
        # a malformed push gets eimPackageError invalidPackageFormat(1) and the agent keeps serving
        await rig.server.push(EID, tlv.encode(0xBF4E, tlv.encode(0xBF51, b"\x01")), correlation=b"push-2")
        for _ in range(100):
            if len(rig.server.answers_to_pushes) > 1:
                break
            await asyncio.sleep(0.05)
        assert rig.server.answers_to_pushes[1] == (bytes.fromhex("BF4E03020101"), b"push-2")
        stop.set()
        await asyncio.wait_for(runner, 10)
    finally:
        stop.set()
        await agent.close()


async def test_fallback_then_return_and_state_change_announced(make_rig):
    rig = await make_rig("http", device="modem")
    rig.card.state.profile(m.iccid_to_bytes(ICCID_B)).fallback_attribute = True
    rig.card.save()
    rig.config.poll.fallback_after = 0.2
    rig.config.poll.return_from_fallback_after = 1.5  # long enough that a slow poll cannot reach it early
    agent = rig.agent()
    await agent.start()
    try:
        assert (await agent.poll_once()).outcome is Outcome.IDLE  # contact with the eIM
        rig.peer.drop = lambda name, der: True  # eIM gone
        await asyncio.sleep(0.25)
        assert (await agent.poll_once()).outcome is Outcome.FAILED
        states = {m.iccid_to_str(p.iccid): p.state for p in rig.card.state.profiles}
        assert states == {ICCID_A: 0, ICCID_B: 1}  # fallback profile enabled
        assert agent.store.state.fallback["active"] and agent.store.state.state_change == StateChangeCause.fallback
        rig.peer.drop = None
        await agent.poll_once()
        req = [r for r in rig.peer.received if r.name == "getEimPackageRequest"][-1].value
        assert req == {"eidValue": EID, "notifyStateChange": None, "stateChangeCause": 1}
        assert agent.store.state.state_change is None
        await asyncio.sleep(1.5)
        await agent.poll_once()
        states = {m.iccid_to_str(p.iccid): p.state for p in rig.card.state.profiles}
        assert states == {ICCID_A: 1, ICCID_B: 0}  # back from fallback
        await agent.poll_once()
        req = [r for r in rig.peer.received if r.name == "getEimPackageRequest"][-1].value
        assert req.get("stateChangeCause") == 1
    finally:
        await agent.close()


async def test_mqtt_push_while_offline_delivered_by_the_persistent_session(make_rig):
    rig = await make_rig("mqtt")
    agent = rig.agent()
    await agent.start()
    stop = asyncio.Event()
    try:
        await agent.poll_once()  # first connection: session created, down topic subscribed
        await agent.ctx.close_transport()  # the device goes to sleep
        await rig.server.push(EID, tlv.encode(0xBF4E, rig.peer.psmo(rig.peer.enable(ICCID_B))), correlation=b"p")
        await asyncio.sleep(0.2)
        assert rig.peer.results == []
        rig.config.poll.interval = 30
        runner = asyncio.create_task(agent.run(stop))  # wakes up: reconnects with clean start off
        for _ in range(200):
            if rig.peer.results:
                break
            await asyncio.sleep(0.05)
        assert rig.server.answers_to_pushes[0][1] == b"p"
        assert rig.peer.result_kinds() == ["ePRAndNotifications"]
        assert {m.iccid_to_str(p.iccid): p.state for p in rig.card.state.profiles} == {ICCID_A: 0, ICCID_B: 1}
        stop.set()
        await asyncio.wait_for(runner, 10)
    finally:
        stop.set()
        await agent.close()
