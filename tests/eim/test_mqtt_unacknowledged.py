"""The MQTT binding against a broker that stops acknowledging its answers (``eim.bindings.mqtt``).

The eIM hands an answer to paho without waiting for the broker's PUBACK. What bounds the answers that are not
acknowledged yet is paho's in-flight window (``max(20, max_concurrency)`` sent) and then ``max_unacknowledged``
(sent or queued): past it an answer is refused and logged, the worker keeps serving, and once the broker
acknowledges again the queued answers go out in order.

The broker here is written by hand from the MQTT Version 5.0 OASIS Standard (7 March 2019): fixed header and
Variable Byte Integer (1.5.5, 2.1), CONNACK (3.2), PUBLISH (3.3; Response Topic 0x08, Correlation Data 0x09,
3.3.2.3), PUBACK (3.4), SUBACK (3.9), PINGRESP (3.13). None of its bytes come from paho or from our encoder.
"""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest

from eim.bindings import mqtt as mqtt_binding
from eim.bindings.mqtt import MqttBinding, PushFailed
from rsp import asn1
from tests.eim.test_bindings_common import EID, NO_PACKAGE, SpecHandler, get_eim_package_request
from tests.eim.test_bindings_mqtt import _until

TRANSFER = asn1.encode("EsipaMessageFromEimToIpa", ("transferEimPackageRequest", ("eimAcknowledgements", [20, 21])))


def _vbi(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _vbi(len(body)) + body


def request_publish(packet_id: int, correlation: bytes, payload: bytes) -> bytes:
    """A QoS 1 PUBLISH as a broker delivers an IPA's request: topic, packet id, Response Topic, Correlation Data."""
    props = b"\x08" + _utf8(f"esipa/{EID}/down") + b"\x09" + struct.pack("!H", len(correlation)) + correlation
    body = _utf8(f"esipa/{EID}/up") + struct.pack("!H", packet_id) + _vbi(len(props)) + props + payload
    return _packet(0x32, body)


class HandBroker:
    """One client connection: CONNACK, SUBACK, then whatever the test sends; the eIM's PUBLISHes are collected as
    (packet id, Correlation Data, payload) and acknowledged only when the test says so."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, bytes, bytes]] = []
        self.subscribed = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        if self.writer is not None:
            self.writer.close()

    async def _read_packet(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        first = (await reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            byte = (await reader.readexactly(1))[0]
            length += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return first, await reader.readexactly(length)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        try:
            while True:
                first, body = await self._read_packet(reader)
                kind = first >> 4
                if kind == 1:  # CONNECT -> CONNACK: no session present, success, no properties
                    writer.write(_packet(0x20, b"\x00\x00\x00"))
                elif kind == 8:  # SUBSCRIBE -> SUBACK granting QoS 1
                    writer.write(_packet(0x90, body[:2] + b"\x00\x01"))
                    self.subscribed.set()
                elif kind == 3:  # the eIM's answer
                    (tlen,) = struct.unpack_from("!H", body)
                    pos = 2 + tlen
                    (packet_id,) = struct.unpack_from("!H", body, pos)
                    pos += 2
                    plen, shift = 0, 0
                    while True:
                        byte = body[pos]
                        pos += 1
                        plen += (byte & 0x7F) << shift
                        shift += 7
                        if not byte & 0x80:
                            break
                    props, payload = body[pos : pos + plen], body[pos + plen :]
                    correlation = b""
                    i = 0
                    while i < len(props):
                        ident = props[i]
                        if ident == 0x09:
                            (n,) = struct.unpack_from("!H", props, i + 1)
                            correlation = props[i + 3 : i + 3 + n]
                            i += 3 + n
                        elif ident in (0x03, 0x08):  # Content Type, Response Topic: UTF-8 strings
                            (n,) = struct.unpack_from("!H", props, i + 1)
                            i += 3 + n
                        else:
                            raise AssertionError(f"unexpected property {ident:#x} in an answer")
                    self.answers.append((packet_id, correlation, payload))
                elif kind == 12:  # PINGREQ
                    writer.write(b"\xd0\x00")
                # PUBACKs for our requests (kind 4) and anything else: nothing to do
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)

    def ack(self, packet_ids: list[int]) -> None:
        for pid in packet_ids:
            self.send(_packet(0x40, struct.pack("!H", pid)))


def test_a_broker_that_stops_acknowledging_gets_a_bounded_queue_and_the_worker_keeps_serving(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="eim.esipa.mqtt")
    request = get_eim_package_request(EID)

    async def go() -> None:
        broker = HandBroker()
        port = await broker.start()
        handler = SpecHandler()
        binding = MqttBinding(
            handler, "127.0.0.1", port, client_id="eim-unacked", max_concurrency=1, max_unacknowledged=30
        )
        await binding.start()
        try:
            await asyncio.wait_for(broker.subscribed.wait(), 10)
            for i in range(1, 36):  # 35 requests; the broker acknowledges none of the answers
                broker.send(request_publish(i, b"c%03d" % i, request))
                await _until(lambda i=i: len(handler.calls) == i)
            await _until(lambda: len(broker.answers) == 20)  # paho's in-flight window
            await asyncio.sleep(0.3)
            assert len(broker.answers) == 20, "answers past the in-flight window went out without a PUBACK"
            assert [c for _, c, _ in broker.answers] == [b"c%03d" % i for i in range(1, 21)]
            assert binding.undelivered == 5, "answers 31-35 are past max_unacknowledged (30) and refused"
            refused = [r for r in caplog.records if r.getMessage() == "MQTT answer not delivered"]
            assert len(refused) == 1 and refused[0].suppressed == 0  # one line per cause and minute, not five
            with pytest.raises(PushFailed):  # a push shares the bound
                await binding.push(EID, TRANSFER)

            broker.ack([pid for pid, _, _ in broker.answers])  # the broker acknowledges again
            await _until(lambda: len(broker.answers) == 30)
            assert [c for _, c, _ in broker.answers[20:]] == [b"c%03d" % i for i in range(21, 31)]
            assert all(payload == NO_PACKAGE for _, _, payload in broker.answers)
            assert len({pid for pid, _, _ in broker.answers}) == 30  # no packet id reused while in flight

            broker.ack([pid for pid, _, _ in broker.answers[20:]])
            broker.send(request_publish(99, b"after", request))  # the worker still serves
            await _until(lambda: len(broker.answers) == 31)
            assert broker.answers[-1][1:] == (b"after", NO_PACKAGE)
        finally:
            await binding.stop(grace=1)
            await broker.close()

    asyncio.run(go())


def test_without_aiomqtt_s_paho_client_an_answer_is_awaited_as_before(monkeypatch) -> None:
    """The direct hand-over to paho uses aiomqtt's private paho client; another aiomqtt version without it gets the
    answer through ``aiomqtt.Client.publish``, which waits for the PUBACK: the same bytes reach the broker."""
    monkeypatch.setattr(mqtt_binding, "_paho_client", lambda: type("NotPaho", (), {}))
    request = get_eim_package_request(EID)

    async def go() -> None:
        broker = HandBroker()
        port = await broker.start()
        binding = MqttBinding(SpecHandler(), "127.0.0.1", port, client_id="eim-fallback", max_concurrency=1)
        await binding.start()
        try:
            await asyncio.wait_for(broker.subscribed.wait(), 10)
            broker.send(request_publish(1, b"first", request))
            await _until(lambda: len(broker.answers) == 1)
            broker.send(request_publish(2, b"second", request))
            await asyncio.sleep(0.3)
            assert len(broker.answers) == 1, "with max_concurrency 1 the second waits for the first's PUBACK"
            broker.ack([broker.answers[0][0]])
            await _until(lambda: len(broker.answers) == 2)
            assert [(c, p) for _, c, p in broker.answers] == [(b"first", NO_PACKAGE), (b"second", NO_PACKAGE)]
            assert binding.undelivered == 0
        finally:
            await binding.stop(grace=1)
            await broker.close()

    asyncio.run(go())
