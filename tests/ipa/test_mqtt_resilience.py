"""ESipa over MQTT when the broker loses messages: requests published while no eIM subscribes, a broker restarted
without persistence in the middle of a request, the eIM's error answers - each with a private Mosquitto.

The IPA publishes a pending request again with the same correlation data (ipa/esipa/mqtt.py); the tests assert
what the eIM side saw (how many copies, with which correlation data) and what the IPA got, never timings."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest

from ipa import messages as m
from ipa.esipa import EsipaError
from ipa.esipa.mqtt import MqttTransport
from ipa.procedures.eim_package_retrieval import Outcome
from rsp import tlv
from tests.ipa.conftest import EID, ICCID_A, ICCID_B
from tests.ipa.peer import Drop, MqttEim, MqttErrorAnswer
from tests.services import run_mosquitto

NOTHING = bytes.fromhex("BF4F03020101")  # GetEimPackageResponse: noEimPackageAvailable
GET = m.get_eim_package_request(EID)
AUTH = m.authenticate_client_request(b"\x11" * 16, bytes.fromhex("BF3800"))  # relayed to the SM-DP+
AUTH_ANSWER = bytes.fromhex("BF3B03020101")
NOTE = m.handle_notification(bytes.fromhex("BF3700"))  # HandleNotification: no ESipa answer

ANSWERS = {GET[:2]: NOTHING, AUTH[:2]: AUTH_ANSWER, NOTE[:2]: None}


class Script:
    """The eIM's functions reduced to fixed answers; ``silent(payload)`` True: no answer at all (as if the eIM's
    answer died with the broker)."""

    def __init__(self, silent: Callable[[bytes], bool] = lambda payload: False) -> None:
        self.silent = silent

    async def handle(self, payload: bytes) -> bytes | MqttErrorAnswer | None:
        if self.silent(payload):
            raise Drop(payload[:2].hex())
        return ANSWERS[payload[:2]]


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition`` (a liveness bound for a hung test, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + 60
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


def transport(broker, **kw) -> MqttTransport:
    kw.setdefault("timeout", 60.0)  # far longer than the test: an answer must come from a retransmission
    kw.setdefault("retransmit_interval", 0.2)
    kw.setdefault("retransmit_max_interval", 0.4)
    kw.setdefault("notification_wait", 0.3)
    return MqttTransport(host=broker.host, port=broker.port, eid=EID, client_id=f"ipa-{os.urandom(4).hex()}", **kw)


@pytest.mark.parametrize("request_der", [GET, AUTH, NOTE], ids=["GetEimPackage", "AuthenticateClient", "Notification"])
async def test_request_published_before_the_eim_subscribes_is_answered_once_it_does(request_der):
    with run_mosquitto() as broker:
        t = transport(broker)
        await t.start()
        eim = MqttEim(Script(), broker.host, broker.port)
        try:
            task = asyncio.create_task(t.send(request_der))
            # two copies published to nobody (PUBACK "No matching subscribers"), then the eIM subscribes
            await until(lambda: t.copies_sent >= 2, "two copies published")
            assert eim.seen == []
            await eim.start()
            answer = await task
            assert answer == ANSWERS[request_der[:2]]
            # the eIM got the request exactly once: the earlier copies reached nobody; for HandleNotification the
            # broker's PUBACK to a copy nobody received did not count as delivery
            assert [p for p, _ in eim.seen] == [request_der]
            assert t.copies_sent >= 3
        finally:
            await t.close()
            await eim.stop()


@pytest.mark.parametrize(
    ("request_der", "repeated"),
    [(GET, True), (AUTH, False), (NOTE, False)],
    ids=["GetEimPackage", "AuthenticateClient", "Notification"],
)
async def test_without_an_answer_only_requests_safe_twice_are_repeated(request_der, repeated):
    """A subscribed eIM that never answers: GetEimPackage / ProvideEimPackageResult go out again with the same
    correlation data; a relayed download step would make the SM-DP+ refuse the copy, so it is sent once; a
    HandleNotification the broker took for a subscriber counts as delivered."""
    with run_mosquitto() as broker:
        eim = MqttEim(Script(silent=lambda payload: True), broker.host, broker.port)
        await eim.start()
        t = transport(broker, timeout=3.0)
        try:
            if request_der[:2] == NOTE[:2]:
                assert await t.send(request_der) is None
            else:
                with pytest.raises(EsipaError, match=r"no answer on esipa/\w+/down within 3 s"):
                    await t.send(request_der)
            copies = eim.copies(request_der[:2])
            assert len(set(copies)) == 1 and copies[0] is not None  # one request: one correlation data
            assert (len(copies) >= 2) is repeated, copies
        finally:
            await t.close()
            await eim.stop()


@pytest.mark.parametrize("request_der", [GET, AUTH], ids=["GetEimPackage", "AuthenticateClient"])
async def test_broker_restarted_mid_request_the_request_is_published_again(request_der):
    """The eIM got the request but its answer died with the broker (restarted without persistence, same port):
    the IPA reconnects and publishes the request again; the eIM, reconnected, answers that copy."""
    with run_mosquitto() as broker:
        script = Script()
        eim = MqttEim(script, broker.host, broker.port)
        script.silent = lambda payload: eim.connects == 1  # nothing the eIM gets before the restart is answered
        await eim.start()
        t = transport(broker)
        try:
            task = asyncio.create_task(t.send(request_der))
            await until(lambda: len(eim.seen) == 1, "the eIM got the first copy")
            await asyncio.to_thread(broker.start_again)
            answer = await task
            assert answer == ANSWERS[request_der[:2]]
            assert eim.connects >= 2 and t.connects >= 2  # both reconnected to the new broker
            copies = eim.copies(request_der[:2])
            assert len(set(copies)) == 1 and len(copies) >= 2  # one request (correlation data), before and after
            if request_der[:2] == AUTH[:2]:
                # a relayed step is not repeated while an eIM may still work on it: one copy before the restart,
                # one after (the reconnect); copies that reached nobody in between were not seen
                assert len(copies) == 2
        finally:
            await t.close()
            await eim.stop()


async def test_idle_connection_comes_back_after_a_broker_restart_and_gets_pushes():
    """No request pending when the broker restarts: the IPA reconnects by itself and subscribes to its down topic
    again (the restarted broker forgot the persistent session), so the eIM's next push arrives."""
    with run_mosquitto() as broker:
        eim = MqttEim(Script(), broker.host, broker.port)
        await eim.start()
        t = transport(broker)
        await t.start()
        try:
            await asyncio.to_thread(broker.start_again)
            await until(lambda: t.connects >= 2 and t.connected, "the IPA reconnected")
            await until(lambda: eim.connects >= 2 and eim.client is not None, "the eIM reconnected")
            push = tlv.encode(0xBF4E, tlv.encode(0xBF53, m.enc_int(0x80, 1)))
            await eim.push(EID, push, correlation=None)
            got = await t.next_push(timeout=30)
            assert got is not None and got.der == push
            assert t.copies_sent == 0  # nothing was sent: the reconnect did not wait for a request
        finally:
            await t.close()
            await eim.stop()


async def test_error_answer_of_the_eim_is_an_esipa_error_with_its_status():
    with run_mosquitto() as broker:

        class Refuses(Script):
            async def handle(self, payload: bytes) -> MqttErrorAnswer:
                return MqttErrorAnswer(400, "not an ESipa message: unknown tag BF4F")

        eim = MqttEim(Refuses(), broker.host, broker.port)
        await eim.start()
        t = transport(broker)
        try:
            with pytest.raises(EsipaError, match="GetEimPackage: eIM answered 400: not an ESipa message") as err:
                await t.send(GET)
            assert err.value.status == 400
            assert len(eim.seen) == 1  # an answer, even an error, ends the request
        finally:
            await t.close()
            await eim.stop()


async def test_publish_the_broker_refuses_fails_at_once(tmp_path):
    """An ACL that lets the device read but not publish: the PUBACK's reason code (135, not authorized) ends the
    request with an error naming the topic instead of copies until eim.timeout."""
    acl = tmp_path / "acl"
    acl.write_text("topic read esipa/#\n")
    acl.chmod(0o644)
    with run_mosquitto(f"acl_file {acl}") as broker:
        t = transport(broker)
        try:
            with pytest.raises(EsipaError, match=r"broker refused the request on esipa/\w+/up \(reason code 135\)"):
                await t.send(GET)
            assert t.copies_sent == 1
        finally:
            await t.close()


async def test_broker_down_for_the_whole_request_names_the_broker():
    with run_mosquitto() as broker:
        t = transport(broker, timeout=2.0)
        broker.stop()
        with pytest.raises(EsipaError, match=r"GetEimPackage: MQTT broker 127\.0\.0\.1:\d+ not reachable within 2 s"):
            await t.send(GET)
        assert t.copies_sent == 0
        await t.close()


# ---------------------------------------------------------------------- the agent, end to end
async def test_agent_polls_before_the_eim_subscribes_and_runs_the_package(make_rig):
    with run_mosquitto() as broker:
        rig = await make_rig("mqtt", broker=broker)
        rig.config.eim.timeout = 60  # the poll must not end by its timeout
        rig.config.mqtt.retransmit_interval = 0.2
        agent = rig.agent()
        await agent.start()
        try:
            await rig.server.stop()  # the eIM is away (as after a broker restart, before it re-subscribed)
            rig.peer.queue(rig.peer.psmo(rig.peer.enable(ICCID_B)))
            task = asyncio.create_task(agent.poll_once())
            await until(lambda: agent.ctx.transport is not None and agent.ctx.transport.copies_sent >= 2, "copies")
            assert rig.peer.received == []
            await rig.server.start()
            r = await task
            assert r.outcome is Outcome.WORK and r.package == "euiccPackageRequest"
            assert [x.name for x in rig.peer.received].count("getEimPackageRequest") == 1
            assert len(rig.peer.results) == 1 and rig.peer.epr_verified == [True]
            assert {m.iccid_to_str(p.iccid): p.state for p in rig.card.state.profiles} == {ICCID_A: 0, ICCID_B: 1}
            assert agent.store.state.results == []
        finally:
            await agent.close()
            await rig.server.stop()  # before its broker goes


async def test_agent_result_delivery_survives_a_broker_restart(make_rig):
    """The eIM took the ProvideEimPackageResult, then the broker restarted before its answer went out: the same
    poll publishes the result again (same correlation data), the eIM acknowledges it, nothing stays queued."""
    with run_mosquitto() as broker:
        rig = await make_rig("mqtt", broker=broker)
        rig.config.eim.timeout = 60
        rig.config.mqtt.retransmit_interval = 1.0
        agent = rig.agent()
        await agent.start()
        lost = asyncio.Event()

        def lose_results_before_the_restart(name: str, der: bytes) -> bool:
            if name == "provideEimPackageResult" and rig.server.connects == 1:
                lost.set()
                return True
            return False

        async def restart_when_lost() -> None:
            await lost.wait()
            await asyncio.to_thread(broker.start_again)

        restarter = asyncio.create_task(restart_when_lost())
        try:
            rig.peer.drop = lose_results_before_the_restart
            rig.peer.queue(rig.peer.psmo(rig.peer.enable(ICCID_B)))
            r = await agent.poll_once()
            await restarter
            assert r.outcome is Outcome.WORK, r  # delivered within the poll, not queued for the next one
            assert rig.server.connects >= 2
            copies = rig.server.copies(b"\xbf\x50")
            assert len(copies) >= 2 and len(set(copies)) == 1  # the same request before and after the restart
            assert len(rig.peer.results) == 1 and rig.peer.epr_verified == [True]
            assert {m.iccid_to_str(p.iccid): p.state for p in rig.card.state.profiles} == {ICCID_A: 0, ICCID_B: 1}
            assert agent.store.state.results == [] and rig.card.state.notifications == []
        finally:
            restarter.cancel()
            await agent.close()
            await rig.server.stop()  # before its broker goes
