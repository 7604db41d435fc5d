"""A counting TCP/UDP proxy on loopback (own thread and event loop): every byte between client and server, per
direction, with the number of TCP connections, UDP datagrams and HTTP requests seen. Bytes are counted at the
socket level (application payload of TCP/UDP: HTTP headers, CoAP header and options, MQTT fixed/variable
headers and properties, TLS records when there are any); IP/TCP/UDP headers are added as estimates by the
report (IPv4 + UDP = 28 bytes per datagram; IPv4 + TCP = 40 bytes per segment, ACKs not counted)."""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass


@dataclass
class Counts:
    up: int = 0  # client -> server bytes
    down: int = 0  # server -> client bytes
    up_chunks: int = 0  # reads (~segments/datagrams) client -> server
    down_chunks: int = 0
    connections: int = 0
    http_requests: int = 0
    der_up: int = 0  # application payload (HTTP bodies, CoAP payloads, MQTT PUBLISH payloads) client -> server
    der_down: int = 0
    messages_up: int = 0
    messages_down: int = 0
    idle_polls: int = 0  # answers "nothing to do" (BF4F03020101) seen server -> client

    def snapshot(self) -> Counts:
        return Counts(**self.__dict__)

    def minus(self, other: Counts) -> Counts:
        return Counts(**{k: getattr(self, k) - getattr(other, k) for k in self.__dict__})


class CountingProxy:
    def __init__(self, target_port: int, *, udp: bool = False, protocol: str = "", esipa_only: bool = False) -> None:
        """``protocol`` ("http" | "mqtt" | "coap") turns on payload parsing (``der_*``, ``messages_*``);
        ``esipa_only`` (HTTP) counts only connections whose first request is ``POST /gsma/rsp2/asn1`` (the
        operator API on the same port passes uncounted)."""
        self.target = ("127.0.0.1", target_port)
        self.udp = udp
        self.protocol = protocol or ("coap" if udp else "")
        self.esipa_only = esipa_only
        self.counts = Counts()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True, name="counting-proxy")

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        import contextlib

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.close()
        front = getattr(self, "_front", None)
        if front is not None:
            front.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        if self.udp:
            await self._start_udp()
            return
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._server = server

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counts.connections += 1
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        for w in (writer, uw):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        counted = not self.esipa_only
        first = True
        parsers = {True: _parser(self.protocol), False: _parser(self.protocol)}

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, up: bool) -> None:
            nonlocal counted, first
            try:
                while data := await r.read(65536):
                    if up and first:
                        first = False
                        counted = counted or data.startswith(b"POST /gsma/rsp2/asn1")
                    if not counted:
                        w.write(data)
                        await w.drain()
                        continue
                    for size, body in parsers[up](data):
                        self._message(up, size, body)
                    if up:
                        self.counts.up += len(data)
                        self.counts.up_chunks += 1
                        self.counts.http_requests += data.count(b"POST /")
                    else:
                        self.counts.down += len(data)
                        self.counts.down_chunks += 1
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        try:
            await asyncio.gather(pump(reader, uw, True), pump(ur, writer, False))
        except asyncio.CancelledError:  # proxy shutting down: end quietly (the stream callback reads the result)
            for w in (writer, uw):
                w.close()

    def _message(self, up: bool, size: int, body: bytes) -> None:
        if up:
            self.counts.der_up += size
            self.counts.messages_up += 1 if size else 0
        else:
            self.counts.der_down += size
            self.counts.messages_down += 1 if size else 0
            if body == b"\xbf\x4f\x03\x02\x01\x01":
                self.counts.idle_polls += 1

    def _coap(self, up: bool, data: bytes) -> None:
        if len(data) < 4:
            return
        tkl = data[0] & 0x0F
        i = 4 + tkl
        while i < len(data) and data[i] != 0xFF:  # skip options
            head = data[i]
            delta, length = head >> 4, head & 0x0F
            i += 1
            if delta == 13:
                i += 1
            elif delta == 14:
                i += 2
            if length == 13:
                length = data[i] + 13
                i += 1
            elif length == 14:
                length = int.from_bytes(data[i : i + 2], "big") + 269
                i += 2
            i += length
        payload = data[i + 1 :] if i < len(data) else b""
        if payload:
            self._message(up, len(payload), payload)

    async def _start_udp(self) -> None:
        loop = asyncio.get_running_loop()
        proxy = self

        class Upstream(asyncio.DatagramProtocol):
            def __init__(self, client_addr):
                self.client_addr = client_addr

            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                proxy.counts.down += len(data)
                proxy.counts.down_chunks += 1
                if proxy.protocol == "coap":  # DTLS records are not parsed
                    proxy._coap(False, data)
                proxy._front.sendto(data, self.client_addr)

        upstreams: dict = {}

        class Front(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                proxy._front = transport

            def datagram_received(self, data, addr):
                proxy.counts.up += len(data)
                proxy.counts.up_chunks += 1
                if proxy.protocol == "coap":
                    proxy._coap(True, data)
                up = upstreams.get(addr)
                if up is None:
                    upstreams[addr] = up = asyncio.ensure_future(
                        loop.create_datagram_endpoint(lambda: Upstream(addr), remote_addr=proxy.target)
                    )
                    proxy.counts.connections += 1

                def send(fut, data=data):
                    fut.result()[0].sendto(data)

                if up.done():
                    send(up)
                else:
                    up.add_done_callback(send)

        transport, _ = await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", 0))
        self.port = transport.get_extra_info("sockname")[1]


def _parser(protocol: str):
    """A stateful splitter for one direction of a stream: feed bytes, get (payload size, payload) per message."""
    buf = bytearray()

    def http(data: bytes):
        buf.extend(data)
        out = []
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return out
            length = 0
            for line in bytes(buf[:end]).split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if len(buf) < end + 4 + length:
                return out
            body = bytes(buf[end + 4 : end + 4 + length])
            del buf[: end + 4 + length]
            out.append((length, body))

    def mqtt(data: bytes):
        buf.extend(data)
        out = []
        while len(buf) >= 2:
            n, mult, i = 0, 1, 1
            while True:
                if i >= len(buf):
                    return out
                b = buf[i]
                n += (b & 0x7F) * mult
                mult *= 128
                i += 1
                if not b & 0x80:
                    break
            if len(buf) < i + n:
                return out
            kind, flags, packet = buf[0] >> 4, buf[0] & 0x0F, bytes(buf[i : i + n])
            del buf[: i + n]
            if kind == 3:  # PUBLISH (MQTT v5): topic, [packet id], properties, payload
                j = 2 + int.from_bytes(packet[:2], "big")
                if (flags >> 1) & 3:
                    j += 2
                plen, mult = 0, 1
                while True:
                    b = packet[j]
                    plen += (b & 0x7F) * mult
                    mult *= 128
                    j += 1
                    if not b & 0x80:
                        break
                payload = packet[j + plen :]
                out.append((len(payload), payload))
        return out

    if protocol == "http":
        return http
    if protocol == "mqtt":
        return mqtt
    return lambda data: []
