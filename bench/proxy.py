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

    def snapshot(self) -> Counts:
        return Counts(**self.__dict__)

    def minus(self, other: Counts) -> Counts:
        return Counts(**{k: getattr(self, k) - getattr(other, k) for k in self.__dict__})


class CountingProxy:
    def __init__(self, target_port: int, *, udp: bool = False) -> None:
        self.target = ("127.0.0.1", target_port)
        self.udp = udp
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
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

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

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, up: bool) -> None:
            try:
                while data := await r.read(65536):
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

        await asyncio.gather(pump(reader, uw, True), pump(ur, writer, False))

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
                proxy._front.sendto(data, self.client_addr)

        upstreams: dict = {}

        class Front(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                proxy._front = transport

            def datagram_received(self, data, addr):
                proxy.counts.up += len(data)
                proxy.counts.up_chunks += 1
                up = upstreams.get(addr)
                if up is None:
                    upstreams[addr] = up = asyncio.ensure_future(
                        loop.create_datagram_endpoint(lambda: Upstream(addr), remote_addr=proxy.target))
                    proxy.counts.connections += 1

                def send(fut, data=data):
                    fut.result()[0].sendto(data)

                if up.done():
                    send(up)
                else:
                    up.add_done_callback(send)

        transport, _ = await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", 0))
        self.port = transport.get_extra_info("sockname")[1]
