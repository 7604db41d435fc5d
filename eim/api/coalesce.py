"""One send per HTTP response: a response's head and its body leave the server in one write.

uvicorn's httptools protocol writes a response in two ``transport.write`` calls, the status line and headers at
``http.response.start`` and the body at ``http.response.body``. uvloop sends each at once, so every answer costs
two ``send`` system calls (and, over TLS, two records). On loopback the sender's ``send`` also runs the receiver's
TCP processing: py-spy put 36 % of the GIL-holding time of an ``eim serve`` answering no-work polls over HTTP in
those two calls (docs/performance.md, section 0).

:class:`CoalescingTransport` sits between the protocol and the real transport. A write is held (at most one chunk)
until the next write, which then goes out joined with it, or until the end of the current event-loop iteration
(``loop.call_soon``), whichever comes first; ``close`` and ``write_eof`` send what is held first, and so does the
protocol when the client half-closes (``eof_received``, after which the transport closes itself); ``abort`` drops it,
and nothing is written into a transport that is already closing (it would be dropped there too).
So the bytes and their order on the wire are unchanged and nothing waits for the client: a head without a body
(``HEAD``, ``204``, a streamed answer) still leaves in the same loop iteration it was written in. Everything else
(reading, flow control, ``get_extra_info``) is the real transport's.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescingTransport:
    """Wraps the transport of one HTTP connection (see the module docstring)."""

    __slots__ = ("_held", "_loop", "_transport", "writes")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self.writes = 0  # writes handed to the real transport (tests)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self.writes += 1
            self._transport.write(held + bytes(data))
            return
        if not data:
            return
        self._held = bytes(data)
        self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand what is held to the real transport now (the protocol calls it when the peer half-closes: the
        transport then closes itself, and a head without a body would be lost)."""
        held = self._held
        if held is None:
            return
        self._held = None
        if not self._transport.is_closing():
            self.writes += 1
            self._transport.write(held)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + (len(self._held) if self._held is not None else 0)

    def __getattr__(self, name: str) -> Any:  # everything else: the real transport's
        return getattr(self._transport, name)
