"""Load generator for the eIM benchmarks: simulated IPAs in ONE separate process (asyncio, uvloop).

Clients are deliberately thin so that they measure the server, not themselves (performance.md): HTTP/1.1 as bare
asyncio Protocols on keep-alive connections with pre-built requests, CoAP as raw UDP datagrams (CON, piggybacked
answers), MQTT v5 as a bare asyncio Protocol too (:class:`LeanMqtt`: several connections, QoS 1, TCP_NODELAY),
each simulated IPA publishing on ``esipa/{EID}/up`` with a Response Topic and Correlation Data. The process marks
its measured window on stderr (``measure start``/``measure stop``) for the caller's CPU accounting.

Modes: ``poll`` - GetEimPackage for registered eUICCs with nothing queued (answer ``BF4F03020101``);
``psmo`` - each worker owns some software eUICCs (state files) whose queues hold signed PSMOs: GetEimPackage ->
ES10b.LoadEuiccPackage on the card (a correctly signed EuiccPackageResult) -> ProvideEimPackageResult ->
acknowledgement checked -> the acknowledged results removed from the card (ES10b.RemoveNotificationFromList, as an
IPA does), until the queue is empty or the time is up.

    python -m bench.eim_load CONFIG.json   # prints one JSON object with the figures
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import struct
import sys
import time
from typing import Any

from rsp import tlv

NO_PACKAGE = bytes.fromhex("BF4F03020101")
PATH = b"/gsma/rsp2/asn1"


def get_eim_package_request(eid: str) -> bytes:
    return tlv.encode(0xBF4F, tlv.encode(0x5A, bytes.fromhex(eid)))


def provide_result(eid: str, part: bytes) -> bytes:
    return tlv.encode(0xBF50, tlv.encode(0x5A, bytes.fromhex(eid)) + part)


# ---------------------------------------------------------------------------------------------- transports
class HttpClient(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time: a bare asyncio Protocol with pre-built request
    heads (no StreamReader/StreamWriter, whose awaits cost the load process about twice the CPU per request), so
    the load takes as little as possible of the CPU the server under test shares with it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._heads: dict[int, bytes] = {}

    async def connect(self) -> None:
        await asyncio.get_running_loop().create_connection(lambda: self, self.host, self.port)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        length = 0
        i = head.find(b"\r\ncontent-length:")
        if i >= 0:
            j = head.find(b"\r\n", i + 2)
            length = int(head[i + 17 : j if j >= 0 else len(head)])
        total = end + 4 + length
        if len(buf) < total:
            return
        status = int(head[9:12])
        body = bytes(buf[end + 4 : total])
        del buf[:total]
        waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"connection closed: {exc}"))

    async def request(self, body: bytes) -> bytes:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("not connected")
        head = self._heads.get(len(body))
        if head is None:
            head = self._heads[len(body)] = (
                b"POST " + PATH + b" HTTP/1.1\r\nHost: eim\r\nContent-Type: application/x-gsma-rsp-asn1\r\n"
                b"X-Admin-Protocol: gsma/rsp/v2.1.0\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
            )
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(head + body)
        status, data = await self._waiter
        if status not in (200, 204):
            raise RuntimeError(f"HTTP {status}: {data[:200]!r}")
        return data

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class CoapEndpoint(asyncio.DatagramProtocol):
    """Raw CoAP over UDP: CON POST with Uri-Path gsma/rsp2/asn1, answers matched by token."""

    OPTIONS = bytes([0xB4]) + b"gsma" + bytes([0x04]) + b"rsp2" + bytes([0x04]) + b"asn1"

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[bytes, asyncio.Future[bytes]] = {}
        self.mid = random.randrange(65536)
        self.token = random.randrange(1 << 32)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 4:
            return
        mtype = (data[0] >> 4) & 3
        tkl = data[0] & 0x0F
        code = data[1]
        mid = data[2:4]
        token = data[4 : 4 + tkl]
        if mtype == 0 and self.transport is not None:  # separate CON response: acknowledge it
            self.transport.sendto(bytes([0x60, 0x00]) + mid)
        if code == 0:  # empty ACK: the answer comes separately
            return
        fut = self.pending.pop(token, None)
        if fut is None or fut.done():
            return
        i = data.find(b"\xff", 4 + tkl)
        payload = data[i + 1 :] if i >= 0 else b""
        if code != 0x44:  # 2.04 Changed
            fut.set_exception(RuntimeError(f"CoAP {code >> 5}.{code & 31:02d}: {payload[:200]!r}"))
        else:
            fut.set_result(payload)

    async def request(self, body: bytes, limit: float = 10.0) -> bytes:
        assert self.transport is not None
        self.mid = (self.mid + 1) & 0xFFFF
        self.token = (self.token + 1) & 0xFFFFFFFF
        token = struct.pack(">I", self.token)
        msg = bytes([0x44, 0x02]) + struct.pack(">H", self.mid) + token + self.OPTIONS + b"\xff" + body
        fut = asyncio.get_running_loop().create_future()
        self.pending[token] = fut
        self.transport.sendto(msg)
        try:
            return await asyncio.wait_for(fut, limit)
        finally:
            self.pending.pop(token, None)


class MqttPool:
    """A few MQTT v5 connections, each carrying many simulated IPAs (answers matched by Correlation Data)."""

    def __init__(self, host: str, port: int, connections: int) -> None:
        self.host, self.port, self.n = host, port, connections
        self.clients: list[Any] = []
        self.pending: dict[bytes, asyncio.Future[bytes]] = {}
        self.tasks: list[asyncio.Task] = []
        self.seq = 0

    async def start(self) -> None:
        import socket

        import aiomqtt

        for i in range(self.n):
            c = aiomqtt.Client(
                self.host,
                self.port,
                identifier=f"bench-ipa-{os.getpid()}-{i}",
                protocol=aiomqtt.ProtocolVersion.V5,
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                max_inflight_messages=1000,
                max_queued_incoming_messages=100000,
                timeout=10,
            )
            c.pending_calls_threshold = 100000
            await c.__aenter__()
            await c.subscribe("esipa/+/down", qos=1)
            self.clients.append(c)
            self.tasks.append(asyncio.create_task(self._listen(c)))

    async def _listen(self, client: Any) -> None:
        async for m in client.messages:
            corr = getattr(m.properties, "CorrelationData", None) if m.properties else None
            fut = self.pending.pop(bytes(corr or b""), None)
            if fut is not None and not fut.done():
                fut.set_result(bytes(m.payload))

    async def request(self, eid: str, body: bytes, client_index: int, limit: float = 10.0) -> bytes:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.seq += 1
        corr = self.seq.to_bytes(8, "big")
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = f"esipa/{eid}/down"
        props.CorrelationData = corr
        fut = asyncio.get_running_loop().create_future()
        self.pending[corr] = fut
        client = self.clients[client_index % len(self.clients)]
        await client.publish(f"esipa/{eid}/up", body, qos=1, properties=props)
        try:
            return await asyncio.wait_for(fut, limit)
        finally:
            self.pending.pop(corr, None)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for c in self.clients:
            try:
                await c.__aexit__(None, None, None)
            except Exception:
                pass


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


class LeanMqtt(asyncio.Protocol):
    """One MQTT v5 connection as a bare asyncio Protocol: just what the load needs - CONNECT (clean start, Receive
    Maximum 65535), SUBSCRIBE ``esipa/+/down`` at QoS 1, PUBLISH QoS 1 with Response Topic and Correlation Data,
    PUBACK for what arrives at QoS 1. The same packets as aiomqtt/paho send, without their per-message Python
    machinery (~1 ms of the load process's CPU per request, as much as the eIM worker's own): the load takes less
    of the 2 cores it shares with the workers and the broker."""

    def __init__(self, pool: LeanMqttPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.packet_id = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        import socket

        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, kind: int, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(bytes([kind]) + _varint(len(body)) + body)

    def next_id(self) -> int:
        self.packet_id = self.packet_id % 65535 + 1
        return self.packet_id

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while len(buf) >= 2:
            length, mult, i = 0, 1, 1
            while True:  # remaining length (variable byte integer)
                if i >= len(buf):
                    return
                b = buf[i]
                length += (b & 0x7F) * mult
                mult <<= 7
                i += 1
                if not b & 0x80:
                    break
            if len(buf) < i + length:
                return
            kind, body = buf[0], bytes(buf[i : i + length])
            del buf[: i + length]
            self.packet(kind, body)

    def packet(self, kind: int, body: bytes) -> None:
        t = kind >> 4
        if t == 3:  # PUBLISH
            qos = (kind >> 1) & 3
            n = struct.unpack_from(">H", body)[0]
            j = 2 + n
            if qos:
                pid = body[j : j + 2]
                j += 2
                self.send(0x40, pid)  # PUBACK (reason success, no properties)
            plen, mult = 0, 1
            while True:
                b = body[j]
                j += 1
                plen += (b & 0x7F) * mult
                mult <<= 7
                if not b & 0x80:
                    break
            props, payload = body[j : j + plen], body[j + plen :]
            k, corr = 0, b""
            while k < len(props):  # the properties the eIM sets on an answer
                pid_ = props[k]
                k += 1
                if pid_ in (0x08, 0x09, 0x03):  # Response Topic, Correlation Data, Content Type
                    m = struct.unpack_from(">H", props, k)[0]
                    if pid_ == 0x09:
                        corr = props[k + 2 : k + 2 + m]
                    k += 2 + m
                elif pid_ == 0x01:  # Payload Format Indicator
                    k += 1
                elif pid_ == 0x02:  # Message Expiry Interval
                    k += 4
                elif pid_ == 0x0B:  # Subscription Identifier
                    while props[k] & 0x80:
                        k += 1
                    k += 1
                elif pid_ == 0x26:  # User Property
                    m = struct.unpack_from(">H", props, k)[0]
                    k += 2 + m
                    m = struct.unpack_from(">H", props, k)[0]
                    k += 2 + m
                else:
                    break
            fut = self.pool.pending.pop(corr, None)
            if fut is not None and not fut.done():
                fut.set_result(payload)
        elif t == 2:  # CONNACK
            if body[1] != 0 and not self.ready.done():
                self.ready.set_exception(RuntimeError(f"MQTT CONNACK reason {body[1]}"))
        elif t == 9 and not self.ready.done():  # SUBACK
            self.ready.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"MQTT connection closed: {exc}"))


class LeanMqttPool:
    """:class:`MqttPool`'s interface over :class:`LeanMqtt` connections (answers matched by Correlation Data)."""

    def __init__(self, host: str, port: int, connections: int, prefix: str = "esipa") -> None:
        self.host, self.port, self.n, self.prefix = host, port, connections, prefix
        self.conns: list[LeanMqtt] = []
        self.pending: dict[bytes, asyncio.Future[bytes]] = {}
        self.seq = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for i in range(self.n):
            _t, c = await loop.create_connection(lambda: LeanMqtt(self), self.host, self.port)
            # CONNECT: "MQTT" v5, clean start, keep-alive 60 s, Receive Maximum 65535
            props = bytes([0x21]) + struct.pack(">H", 65535)
            c.send(
                0x10,
                _utf8("MQTT")
                + bytes([5, 0x02])
                + struct.pack(">H", 60)
                + _varint(len(props))
                + props
                + _utf8(f"bench-ipa-{os.getpid()}-{i}"),
            )
            c.send(0x82, struct.pack(">H", c.next_id()) + b"\x00" + _utf8(f"{self.prefix}/+/down") + bytes([1]))
            await asyncio.wait_for(c.ready, 10)
            self.conns.append(c)

    async def request(self, eid: str, body: bytes, client_index: int, limit: float = 10.0) -> bytes:
        self.seq += 1
        corr = self.seq.to_bytes(8, "big")
        fut = asyncio.get_running_loop().create_future()
        self.pending[corr] = fut
        c = self.conns[client_index % len(self.conns)]
        p = self.prefix
        props = bytes([0x08]) + _utf8(f"{p}/{eid}/down") + bytes([0x09]) + struct.pack(">H", len(corr)) + corr
        c.send(
            0x32,  # PUBLISH, QoS 1
            _utf8(f"{p}/{eid}/up") + struct.pack(">H", c.next_id()) + _varint(len(props)) + props + body,
        )
        try:
            return await asyncio.wait_for(fut, limit)
        finally:
            self.pending.pop(corr, None)

    async def close(self) -> None:
        for c in self.conns:
            if c.transport is not None:
                c.send(0xE0, b"\x00")  # DISCONNECT, normal
                c.transport.close()


# ---------------------------------------------------------------------------------------------- workers
class Run:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.latencies: list[float] = []
        self.bodies: list[bytes] = []  # the poll requests, one per EID
        self.round_trips: list[float] = []
        self.requests = 0
        self.errors = 0
        self.first_error = ""
        self.deadline = 0.0

    async def sender(self, index: int):
        """Returns ``send(eid, body) -> answer`` for worker ``index`` (and a closer)."""
        b = self.cfg["binding"]
        host = "127.0.0.1"
        if b == "http":
            ports = self.cfg["ports"]
            c = HttpClient(host, ports[index % len(ports)])
            await c.connect()
            return (lambda eid, body: c.request(body)), c.close
        if b == "coap":
            loop = asyncio.get_running_loop()
            transport, ep = await loop.create_datagram_endpoint(CoapEndpoint, remote_addr=(host, self.cfg["ports"][0]))

            async def close() -> None:
                transport.close()

            # UDP may lose an answer and this client does not retransmit: it waits at most until 1 s after the
            # measured window, so one lost answer costs its request, not the whole cell's rate (a 10 s wait
            # stretched a 3 s cell to 10 s once: docs/performance.md, findings, fifth session)
            def limit() -> float:
                return max(1.0, min(10.0, self.deadline - time.perf_counter() + 1.0))

            return (lambda eid, body: ep.request(body, limit())), close
        pool: LeanMqttPool = self.mqtt

        async def nothing() -> None:
            return None

        return (lambda eid, body: pool.request(eid, body, index)), nothing

    def _error(self, exc: BaseException) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = f"{type(exc).__name__}: {exc}"

    async def poll_worker(self, index: int, eids: list[str]) -> None:
        send, close = await self.sender(index)
        requests = self.bodies  # built once, before the warm-up: not inside the measured window
        i = index
        n = len(requests)
        lat = self.latencies
        try:
            while time.perf_counter() < self.deadline:
                t = time.perf_counter()
                try:
                    answer = await send(eids[i % n], requests[i % n])
                    if answer != NO_PACKAGE:
                        raise RuntimeError(f"unexpected answer {answer.hex()}")
                except Exception as exc:
                    self._error(exc)
                    await asyncio.sleep(0.01)
                    continue
                lat.append(time.perf_counter() - t)
                i += self.cfg["concurrency"]
        finally:
            await close()

    async def psmo_worker(self, index: int, cards: list[tuple[str, Any]]) -> None:
        from ipa.es10 import Es10Client
        from rsp import asn1

        send, close = await self.sender(index)
        clients = []
        for eid, card in cards:
            from euicc.channel import LocalApduChannel

            es10 = Es10Client(LocalApduChannel(card))
            await es10.open()
            clients.append((eid, es10))
        active = list(clients)
        k = 0
        try:
            while active and time.perf_counter() < self.deadline:
                eid, es10 = active[k % len(active)]
                t = time.perf_counter()
                try:
                    answer = await send(eid, get_eim_package_request(eid))
                    self.requests += 1
                    if answer == NO_PACKAGE:
                        active.remove((eid, es10))
                        continue
                    top = tlv.parse_exact(answer)
                    package = tlv.children(top)[0].raw
                    if package[:2] != b"\xbf\x51":
                        raise RuntimeError(f"not an eUICC package: {answer[:8].hex()}")
                    epr = await es10.call(package, "LoadEuiccPackage")
                    ack = await send(eid, provide_result(eid, epr))
                    self.requests += 1
                    if not ack.startswith(b"\xbf\x50") or b"\xbf\x53" not in ack:
                        raise RuntimeError(f"result not acknowledged: {ack.hex()}")
                    # as an IPA does (ipa.procedures.result_delivery): the acknowledged results leave the card, so
                    # the card's list of pending results does not grow round trip after round trip
                    name, (alt, value) = asn1.decode("EsipaMessageFromEimToIpa", ack)
                    if name != "provideEimPackageResultResponse" or alt != "eimAcknowledgements":
                        raise RuntimeError(f"not an acknowledgement: {ack.hex()}")
                    for seq in value:
                        await es10.remove_notification_from_list(seq)
                except Exception as exc:
                    self._error(exc)
                    await asyncio.sleep(0.01)
                    k += 1
                    continue
                self.round_trips.append(time.perf_counter() - t)
                k += 1
        finally:
            await close()

    async def main(self) -> dict[str, Any]:
        cfg = self.cfg
        if cfg["binding"] == "mqtt":
            self.mqtt = LeanMqttPool(
                "127.0.0.1", cfg["ports"][0], cfg.get("mqtt_connections", 4), cfg.get("mqtt_prefix", "esipa")
            )
            await self.mqtt.start()
        conc = cfg["concurrency"]
        if cfg["mode"] == "poll":
            eids = cfg["eids"]
            self.bodies = [get_eim_package_request(e) for e in eids]
            # warm-up: one request per worker connection
            self.deadline = time.perf_counter() + cfg.get("warmup", 1.0)
            await asyncio.gather(*(self.poll_worker(i, eids) for i in range(conc)))
            self.latencies.clear()
            self.errors = 0
            start = time.perf_counter()
            self.deadline = start + cfg["duration"]
            mark("start")
            await asyncio.gather(*(self.poll_worker(i, eids) for i in range(conc)))
            elapsed = time.perf_counter() - start
            mark("stop")
            count = len(self.latencies)
            lat = self.latencies
        else:
            from euicc import state as state_mod
            from euicc.card import SoftEuicc

            cards = [(eid, SoftEuicc(state_mod.load(path), None)) for eid, path in cfg["cards"]]
            groups = [cards[i::conc] for i in range(conc)]
            start = time.perf_counter()
            self.deadline = start + cfg["duration"]
            mark("start")
            await asyncio.gather(*(self.psmo_worker(i, g) for i, g in enumerate(groups) if g))
            elapsed = time.perf_counter() - start
            mark("stop")
            for (_eid, card), (_e, path) in zip(cards, cfg["cards"], strict=True):
                state_mod.save(card.state, path)  # the next run goes on from the card's counters
            count = len(self.round_trips)
            lat = self.round_trips
        if cfg["binding"] == "mqtt":
            await self.mqtt.close()
        from bench.common import cpu_seconds, percentile

        return {
            "count": count,
            "elapsed": elapsed,
            "rate": count / elapsed if elapsed else 0.0,
            "p50_ms": percentile(lat, 50) * 1000,
            "p99_ms": percentile(lat, 99) * 1000,
            "p999_ms": percentile(lat, 99.9) * 1000,
            "max_ms": max(lat, default=0.0) * 1000,
            "requests": self.requests or count,
            "errors": self.errors,
            "first_error": self.first_error,
            "client_cpu_s": cpu_seconds(),
        }


def mark(what: str) -> None:
    """``measure start|stop`` on stderr: the caller accounts the machine's CPU over exactly the measured window."""
    print(f"measure {what}", file=sys.stderr, flush=True)


def main() -> None:
    cfg = json.loads(open(sys.argv[1]).read())
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(Run(cfg).main())
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
