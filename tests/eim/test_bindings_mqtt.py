"""ESipa MQTT v5 binding against a real Mosquitto broker on loopback (aiomqtt device clients)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections import Counter
from collections.abc import Iterator

import aiomqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from eim.bindings import ESIPA_CONTENT_TYPE
from eim.bindings.mqtt import MqttBinding, PushFailed
from eim.interfaces import PackagePusher
from rsp import asn1
from tests.eim.test_bindings_common import (
    EID,
    EID2,
    NO_PACKAGE,
    SpecHandler,
    get_eim_package_request,
    handle_notification,
    large_provide_result,
)
from tests.services import run_mosquitto

# A TransferEimPackageRequest (BF4E) carrying eimAcknowledgements [20, 21]: small, valid, easy to compare.
TRANSFER = asn1.encode("EsipaMessageFromEimToIpa", ("transferEimPackageRequest", ("eimAcknowledgements", [20, 21])))


class Device:
    """An IPA's MQTT side as the binding expects it: client id ``ipa-{EID}``, own up/down topics, QoS 1."""

    def __init__(
        self,
        host: str,
        port: int,
        eid: str,
        *,
        persistent: bool = False,
        username: str | None = None,
        password: str | None = None,
        tls_context=None,
        client_id: str | None = None,
    ) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if persistent else 0
        self.eid = eid
        self.client = aiomqtt.Client(
            host,
            port,
            identifier=client_id or f"ipa-{eid}",
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not persistent,
            properties=props,
            username=username,
            password=password,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            tls_context=tls_context,
        )
        self.pending: dict[bytes, asyncio.Future] = {}
        self.unsolicited: asyncio.Queue = asyncio.Queue()
        self.replies: list = []
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> Device:
        await self.client.__aenter__()
        await self.client.subscribe(f"esipa/{self.eid}/down", qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def connect_only(self) -> Device:
        """Connect (resuming a persistent session) without subscribing again."""
        await self.client.__aenter__()
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        if self._reader:
            self._reader.cancel()
        await self.client.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for message in self.client.messages:
            self.replies.append(message)
            corr = getattr(message.properties, "CorrelationData", None)
            fut = self.pending.pop(corr, None) if corr is not None else None
            if fut is not None and not fut.done():
                fut.set_result(message)
            elif fut is None:
                self.unsolicited.put_nowait(message)

    async def request(self, payload: bytes, *, response_topic: str | None = None, within: float = 10.0):
        corr = os.urandom(8)
        fut = asyncio.get_running_loop().create_future()
        self.pending[corr] = fut
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = response_topic or f"esipa/{self.eid}/down"
        props.CorrelationData = corr
        await self.client.publish(f"esipa/{self.eid}/up", payload, qos=1, properties=props)
        return await asyncio.wait_for(fut, within)


def status_of(message) -> str | None:
    for key, value in getattr(message.properties, "UserProperty", None) or []:
        if key == "esipa-status":
            return value
    return None


class MqttLab:
    """Bindings and device clients on one event loop in a background thread (hypothesis tests are synchronous)."""

    def __init__(self, broker) -> None:
        self.broker = broker
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def binding(self, handler, client_id: str, **options) -> MqttBinding:
        b = MqttBinding(handler, self.broker.host, self.broker.port, client_id=client_id, **options)
        self.run(b.start())
        self.run(b.wait_ready())
        return b

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def broker():
    with run_mosquitto() as b:
        yield b


@pytest.fixture(scope="module")
def lab(broker) -> Iterator[MqttLab]:
    lab = MqttLab(broker)
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="module")
def worker(lab):
    handler = SpecHandler()
    binding = lab.binding(handler, "eim-worker-main")
    yield binding
    lab.run(binding.stop())


def test_binding_is_a_package_pusher(worker):
    assert isinstance(worker, PackagePusher)


def test_request_answered_on_response_topic_with_correlation(lab, worker, broker):
    async def go():
        async with Device(broker.host, broker.port, EID) as dev:
            reply = await dev.request(get_eim_package_request(EID))
            return reply

    reply = lab.run(go())
    assert reply.payload == NO_PACKAGE == bytes.fromhex("BF4F03020101")
    assert str(reply.topic) == f"esipa/{EID}/down"
    assert reply.properties.ContentType == ESIPA_CONTENT_TYPE
    assert reply.qos == 1
    message, ctx = worker.handler.calls[-1]
    assert message == get_eim_package_request(EID)
    assert ctx.binding == "mqtt" and ctx.eid_hint == EID and ctx.peer == f"esipa/{EID}/up"


def test_no_body_answer_is_empty_payload(lab, worker, broker):
    async def go():
        async with Device(broker.host, broker.port, EID) as dev:
            return await dev.request(handle_notification())

    reply = lab.run(go())
    assert reply.payload == b"" and reply.properties.ContentType == ESIPA_CONTENT_TYPE and status_of(reply) is None
    assert worker.handler.notifications[-1] == handle_notification()


def test_large_request(lab, worker, broker):
    async def go():
        async with Device(broker.host, broker.port, EID) as dev:
            return await dev.request(large_provide_result())

    reply = lab.run(go())
    assert asn1.decode("EsipaMessageFromEimToIpa", reply.payload) == (
        "provideEimPackageResultResponse",
        ("eimAcknowledgements", [77]),
    )


@contextlib.contextmanager
def own_broker() -> Iterator[tuple[object, MqttLab]]:
    """A broker of the test's own, so that only the test's workers subscribe to the up topics."""
    with run_mosquitto() as broker:
        lab = MqttLab(broker)
        try:
            yield broker, lab
        finally:
            lab.close()


def test_rejected_and_oversized_get_error_replies():
    with own_broker() as (broker, lab):
        handler = SpecHandler()
        b = lab.binding(handler, "eim-worker-small", max_body_size=1000)

        async def go():
            async with Device(broker.host, broker.port, EID2) as dev:
                bad = await dev.request(b"\x01garbage")
                big = await dev.request(large_provide_result(EID2))
                fine = await dev.request(get_eim_package_request(EID2))
                return bad, big, fine

        try:
            bad, big, fine = lab.run(go())
        finally:
            lab.run(b.stop())
    assert status_of(bad) == "400" and bad.properties.ContentType.startswith("text/plain")
    assert b"EsipaMessageFromIpaToEim" in bad.payload
    assert status_of(big) == "413" and b"1000" in big.payload
    assert status_of(fine) is None and fine.payload == NO_PACKAGE
    assert [m for m, _ in handler.calls] == [b"\x01garbage", get_eim_package_request(EID2)]  # 413 never reached it


def test_response_topic_outside_own_namespace_is_ignored(lab, worker, broker):
    async def go():
        async with Device(broker.host, broker.port, EID) as dev, Device(broker.host, broker.port, EID2) as other:
            reply = await dev.request(get_eim_package_request(EID), response_topic=f"esipa/{EID2}/down")
            await asyncio.sleep(0.3)
            return reply, [m for m in other.replies]

    reply, leaked = lab.run(go())
    assert str(reply.topic) == f"esipa/{EID}/down" and reply.payload == NO_PACKAGE
    assert leaked == []


def test_push_reaches_connected_device(lab, worker, broker):
    async def go():
        async with Device(broker.host, broker.port, EID) as dev:
            await worker.push(EID, TRANSFER)
            return await asyncio.wait_for(dev.unsolicited.get(), 10)

    msg = lab.run(go())
    assert msg.payload == TRANSFER and str(msg.topic) == f"esipa/{EID}/down" and msg.qos == 1
    assert msg.properties.ContentType == ESIPA_CONTENT_TYPE
    assert getattr(msg.properties, "CorrelationData", None) is None


def test_push_reaches_sleeping_device_when_it_wakes(lab, worker, broker):
    """Persistent session on the device side: it subscribes, sleeps (disconnects), the eIM pushes, it wakes."""

    async def go():
        dev = Device(broker.host, broker.port, EID2, persistent=True)
        async with dev:
            pass  # subscribed, session kept by the broker
        await worker.push(EID2, TRANSFER)
        await worker.push(EID2.lower(), TRANSFER[:2] + TRANSFER[2:])  # lower-case EID goes to the same topic
        awake = Device(broker.host, broker.port, EID2, persistent=True)
        await awake.connect_only()
        try:
            first = await asyncio.wait_for(awake.unsolicited.get(), 10)
            second = await asyncio.wait_for(awake.unsolicited.get(), 10)
        finally:
            await awake.__aexit__(None, None, None)
        # clean the session up for other tests
        async with Device(broker.host, broker.port, EID2):
            pass
        return first, second

    first, second = lab.run(go())
    assert first.payload == TRANSFER and second.payload == TRANSFER
    assert str(first.topic) == f"esipa/{EID2}/down"


def test_answer_to_a_push_without_response_topic_gets_no_reply(lab, worker, broker):
    """The IPA answers a push with a TransferEimPackageResponse on its up topic and no Response Topic: the eIM
    handles it (eid_hint from the topic) and publishes nothing back; a request without Response Topic whose
    answer has a body still gets it on the canonical down topic."""
    response = asn1.encode("EsipaMessageFromIpaToEim", ("transferEimPackageResponse", ("eimPackageReceived", None)))

    async def go():
        async with Device(broker.host, broker.port, EID) as dev:
            await worker.push(EID, TRANSFER)
            await asyncio.wait_for(dev.unsolicited.get(), 10)
            await dev.client.publish(f"esipa/{EID}/up", response, qos=1)
            await dev.client.publish(f"esipa/{EID}/up", get_eim_package_request(EID), qos=1)
            answered = await asyncio.wait_for(dev.unsolicited.get(), 10)
            await asyncio.sleep(0.3)
            return answered, dev.unsolicited.qsize()

    before = len(worker.handler.notifications)
    answered, extra = lab.run(go())
    assert worker.handler.notifications[before:] == [response]
    assert worker.handler.calls[-1][1].eid_hint == EID
    assert answered.payload == NO_PACKAGE and str(answered.topic) == f"esipa/{EID}/down"
    assert extra == 0  # nothing was published for the TransferEimPackageResponse


def test_push_refuses_non_eids(lab, worker):
    for bad in ("+", "#", "a/b", "89044045118427484800000000011628/x", ""):
        with pytest.raises(ValueError):
            lab.run(worker.push(bad, TRANSFER))


def test_two_workers_share_the_load_each_request_answered_once():
    with own_broker() as (broker, lab):
        h1, h2 = SpecHandler(delay=0.002), SpecHandler(delay=0.002)
        b1 = lab.binding(h1, "eim-share-1")
        b2 = lab.binding(h2, "eim-share-2")
        eids = [f"8904903212345123451234567890{n:04d}" for n in range(8)]
        per_device = 10

        async def go():
            devices = [Device(broker.host, broker.port, e) for e in eids]
            for d in devices:
                await d.__aenter__()
            try:
                replies = await asyncio.gather(
                    *(d.request(get_eim_package_request(d.eid)) for d in devices for _ in range(per_device))
                )
                await asyncio.sleep(0.5)  # let any duplicate answer arrive
                return replies, [list(d.replies) for d in devices]
            finally:
                for d in devices:
                    await d.__aexit__(None, None, None)

        try:
            replies, seen = lab.run(go())
        finally:
            lab.run(b1.stop())
            lab.run(b2.stop())
    assert all(r.payload == NO_PACKAGE for r in replies)
    assert len(h1.calls) + len(h2.calls) == len(eids) * per_device  # each request handled exactly once
    assert h1.calls and h2.calls  # ... and both workers took part
    for answers in seen:  # each device got exactly one answer per request it sent
        counts = Counter(bytes(m.properties.CorrelationData) for m in answers)
        assert len(counts) == per_device and set(counts.values()) == {1}
    handled = Counter(ctx.eid_hint for _, ctx in h1.calls + h2.calls)
    assert handled == {e: per_device for e in eids}


def test_reconnects_after_broker_restart_and_push_fails_cleanly_while_down():
    with run_mosquitto() as broker:
        lab = MqttLab(broker)
        handler = SpecHandler()
        b = lab.binding(handler, "eim-restart", reconnect_min=0.05, reconnect_max=0.5, push_timeout=0.5)
        try:

            async def ask():
                async with Device(broker.host, broker.port, EID) as dev:
                    return await dev.request(get_eim_package_request(EID))

            assert lab.run(ask()).payload == NO_PACKAGE
            broker.stop()
            lab.run(_until(lambda: not b.connected))
            with pytest.raises(PushFailed):
                lab.run(b.push(EID, TRANSFER))
            broker.start_again()
            lab.run(b.wait_ready(20))
            assert b.connects >= 2
            assert lab.run(ask()).payload == NO_PACKAGE
        finally:
            lab.run(b.stop())
            lab.close()


async def _until(predicate, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
def fuzz_device(lab, worker, broker):
    async def make() -> Device:  # aiomqtt clients are made on the loop they run on
        return await Device(broker.host, broker.port, "8904903212345123451234567899FFFF").__aenter__()

    dev = lab.run(make())
    yield dev
    lab.run(dev.__aexit__(None, None, None))


ESIPA_TAGS = [bytes.fromhex(t) for t in ("BF39", "BF3B", "BF3A", "BF41", "BF3D", "BF4E", "BF4F", "BF50", "30")]


@settings(max_examples=100, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=400),
        st.builds(lambda tag, rest: tag + rest, st.sampled_from(ESIPA_TAGS), st.binary(max_size=200)),
    )
)
def test_garbage_gets_esipa_answer_or_error_reply_and_worker_keeps_serving(lab, fuzz_device, body):
    reply = lab.run(fuzz_device.request(body))
    status = status_of(reply)
    assert status in (None, "400"), (status, reply.payload)
    if status is None and reply.payload:
        asn1.decode("EsipaMessageFromEimToIpa", reply.payload)
    if status == "400":
        assert reply.payload
    ok = lab.run(fuzz_device.request(get_eim_package_request(fuzz_device.eid)))
    assert ok.payload == NO_PACKAGE


def test_push_expires_while_the_device_sleeps(lab, broker):
    """A push carries the Message Expiry Interval: a copy whose expiry passed while the device slept is dropped by
    the broker (a real Mosquitto), so a day asleep does not queue one copy per re-push. ``eim serve`` sets it to
    twice ``[operations] push_retry_s``."""
    from eim.config import Config
    from eim.serve import push_expiry_s

    cfg = Config()
    cfg.operations.push_retry_s = 300.0
    assert push_expiry_s(cfg) == 600
    cfg.operations.push_retry_s = 0.2
    assert push_expiry_s(cfg) == 1

    short = lab.binding(SpecHandler(), "eim-worker-expiry", push_expiry=1)
    eid = "89049032123451234512345678901299"

    async def go():
        async with Device(broker.host, broker.port, eid, persistent=True):
            pass  # subscribed; the broker keeps the session while the device sleeps
        await short.push(eid, TRANSFER)  # expires after 1 s
        await asyncio.sleep(2.5)
        await short.push(eid, TRANSFER[:2] + TRANSFER[2:])  # a fresh copy, still valid on wake-up
        awake = Device(broker.host, broker.port, eid, persistent=True)
        await awake.connect_only()
        try:
            first = await asyncio.wait_for(awake.unsolicited.get(), 10)
            await asyncio.sleep(1.0)
            extra = awake.unsolicited.qsize()
        finally:
            await awake.__aexit__(None, None, None)
        async with Device(broker.host, broker.port, eid):
            pass  # clean the session up
        return first, extra

    try:
        first, extra = lab.run(go())
    finally:
        lab.run(short.stop())
    assert first.payload == TRANSFER
    assert 0 < first.properties.MessageExpiryInterval <= 1
    assert extra == 0, "the expired copy was delivered"
