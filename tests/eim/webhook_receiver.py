"""A tiny HTTP/1.1 webhook receiver on loopback (asyncio streams, no framework): records each POST (headers and
the exact body bytes) and answers with the status the test sets. Runs in the test's loop, or in a thread of its
own (:class:`ThreadedReceiver`) when the eIM under test is another process."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    status: int = 200
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.AbstractServer | None = None
    _arrived: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self, port: int = 0) -> Receiver:
        self._arrived = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                _method, path, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.received.append(Received(path, headers, body))
                status = self.status
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
                if self._arrived is not None:
                    self._arrived.set()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()


class ThreadedReceiver:
    """A :class:`Receiver` on its own loop in a thread (for tests that drive another process synchronously)."""

    def __init__(self, status: int = 200, port: int = 0) -> None:
        self.receiver = Receiver(status=status)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.receiver.start(port), self.loop).result(10)

    @property
    def url(self) -> str:
        return self.receiver.url

    @property
    def received(self) -> list[Received]:
        return list(self.receiver.received)

    def set_status(self, status: int) -> None:
        self.receiver.status = status

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.receiver.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
