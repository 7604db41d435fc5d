"""Load generator for the eIM benchmarks: simulated IPAs in ONE separate process (asyncio, uvloop).

Clients are deliberately thin so that they measure the server, not themselves (performance.md): HTTP/1.1 on raw
keep-alive sockets with pre-built requests, CoAP as raw UDP datagrams (CON, piggybacked answers), MQTT v5 with
aiomqtt (several connections, QoS 1, TCP_NODELAY), each simulated IPA publishing on ``esipa/{EID}/up`` with a
Response Topic and Correlation Data.

Modes: ``poll`` - GetEimPackage for registered eUICCs with nothing queued (answer ``BF4F03020101``);
``psmo`` - each worker owns some software eUICCs (state files) whose queues hold signed PSMOs: GetEimPackage ->
ES10b.LoadEuiccPackage on the card (a correctly signed EuiccPackageResult) -> ProvideEimPackageResult ->
acknowledgement checked, until the queue is empty or the time is up.

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
class HttpClient:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, body: bytes) -> bytes:
        assert self.reader is not None and self.writer is not None
        self.writer.write(
            b"POST " + PATH + b" HTTP/1.1\r\nHost: eim\r\nContent-Type: application/x-gsma-rsp-asn1\r\n"
            b"X-Admin-Protocol: gsma/rsp/v2.1.0\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        data = await self.reader.readexactly(length) if length else b""
        if status not in (200, 204):
            raise RuntimeError(f"HTTP {status}: {data[:200]!r}")
        return data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


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


# ---------------------------------------------------------------------------------------------- workers
class Run:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.latencies: list[float] = []
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

            return (lambda eid, body: ep.request(body)), close
        pool: MqttPool = self.mqtt

        async def nothing() -> None:
            return None

        return (lambda eid, body: pool.request(eid, body, index)), nothing

    def _error(self, exc: BaseException) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = f"{type(exc).__name__}: {exc}"

    async def poll_worker(self, index: int, eids: list[str]) -> None:
        send, close = await self.sender(index)
        requests = [get_eim_package_request(e) for e in eids]
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
            self.mqtt = MqttPool("127.0.0.1", cfg["ports"][0], cfg.get("mqtt_connections", 4))
            await self.mqtt.start()
        conc = cfg["concurrency"]
        if cfg["mode"] == "poll":
            eids = cfg["eids"]
            # warm-up: one request per worker connection
            self.deadline = time.perf_counter() + cfg.get("warmup", 1.0)
            await asyncio.gather(*(self.poll_worker(i, eids) for i in range(conc)))
            self.latencies.clear()
            self.errors = 0
            start = time.perf_counter()
            self.deadline = start + cfg["duration"]
            await asyncio.gather(*(self.poll_worker(i, eids) for i in range(conc)))
            elapsed = time.perf_counter() - start
            count = len(self.latencies)
            lat = self.latencies
        else:
            from euicc import state as state_mod
            from euicc.card import SoftEuicc

            cards = [(eid, SoftEuicc(state_mod.load(path), None)) for eid, path in cfg["cards"]]
            groups = [cards[i::conc] for i in range(conc)]
            start = time.perf_counter()
            self.deadline = start + cfg["duration"]
            await asyncio.gather(*(self.psmo_worker(i, g) for i, g in enumerate(groups) if g))
            elapsed = time.perf_counter() - start
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
            "requests": self.requests or count,
            "errors": self.errors,
            "first_error": self.first_error,
            "client_cpu_s": cpu_seconds(),
        }


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
