"""Slow and surplus clients on the HTTP port, cut at the protocol level (uvicorn's httptools protocol).

uvicorn 0.3x-0.55 has a keep-alive timeout (idle between requests) but no timeout for a request's headers or body:
a client that sends its headers one byte per second, or never sends them, holds a connection (and a file
descriptor) for ever, and a few thousand of them fill the server (slowloris). :func:`guarded_protocol` makes a
subclass of ``HttpToolsProtocol`` that adds, per connection:

====================================================  ==============================================
situation                                             what happens
====================================================  ==============================================
headers not complete ``header_timeout_s`` after the   408 (if nothing was answered yet) and the connection is
connection opened (or the next request's first byte)  closed
body not complete ``body_timeout_s`` after the        408 if the app has not answered yet, connection closed;
headers                                               the app's ``receive()`` returns ``http.disconnect``
the server itself is the one waiting (reading paused  the timer starts again: a slow app is not the
for back-pressure, an earlier pipelined request)      client's fault
``max_connections`` connections already open          503 ``too many connections`` and closed at once
====================================================  ==============================================

Each response leaves in one send, its head joined to its body (:mod:`eim.api.coalesce`).

Idle keep-alive connections are closed after ``[http] keep_alive_s`` (uvicorn's own timer). Refusals and cuts are
counted and logged by subsystem ``eim.serve`` at most once every 10 s, so an attack does not flood the log.
TLS handshakes are bounded by asyncio's ``ssl_handshake_timeout`` (60 s) before any of this runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from eim.api.coalesce import CoalescingTransport

log = logging.getLogger("eim.serve")

_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 16\r\nconnection: close\r\n"
    b"\r\nrequest too slow"
)
_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 20\r\nconnection: close\r\n"
    b"\r\ntoo many connections"
)


class _Tally:
    """Counts of cut and refused connections, logged at most every ``every`` seconds."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.counts: dict[str, int] = {}
        self.last = 0.0

    def note(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            log.warning("HTTP connections cut or refused", extra=dict(self.counts))
            self.counts = {}


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1000
    tally: _Tally

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._timer: asyncio.TimerHandle | None = None
        self._phase = ""
        self._refused = False

    # --------------------------------------------------------------------------------------- connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            self._refused = True
            self.tally.note("refused_too_many")
            transport.write(_503)
            if transport.can_write_eof():  # FIN after the answer; closing with the request unread would reset it
                transport.write_eof()
                self.loop.call_later(1.0, transport.close)
            else:
                transport.close()
            return
        # a response's head and body in one send (eim.api.coalesce)
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._phase = "headers"  # a connection that never sends a byte is cut too
        self._arm("headers")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped until the client closes (at most 1 s)
        super().data_received(data)
        # After the parser ran: a request still in its headers or body gets its deadline now. A request that
        # arrived whole in one read (the usual case) never creates a timer.
        if self._timer is None and self._phase and self.parser is not None and not self.transport.is_closing():
            self._arm(self._phase)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        if self._refused:
            return None  # the transport closes
        transport = self.transport
        if isinstance(transport, CoalescingTransport):  # the transport closes after this: what is held goes first
            transport.flush()
        return super().eof_received()

    # --------------------------------------------------------------------------------------- parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = "headers"  # the timer of the connection's first request runs from the connection

    def on_headers_complete(self) -> None:
        self._disarm()
        self._phase = "body"
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._phase = ""
        super().on_message_complete()

    # --------------------------------------------------------------------------------------- the timer
    def _arm(self, phase: str) -> None:
        self._disarm()
        delay = self.header_timeout if phase == "headers" else self.body_timeout
        self._timer = self.loop.call_later(delay, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        transport = self.transport
        if transport.is_closing():
            return
        cycle = self.cycle
        waiting_on_us = self.flow.read_paused or (
            self._phase == "headers" and cycle is not None and not cycle.response_complete
        )
        if waiting_on_us:
            self._arm(self._phase)
            return
        self.tally.note(f"slow_{self._phase}")
        # in the headers phase a cycle can only be the previous request's, already answered
        if self._phase == "headers" or cycle is None or not cycle.response_started:
            transport.write(_408)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() gets http.disconnect, its send() writes nothing
            cycle.message_event.set()
        transport.close()


def guarded_protocol(
    *, header_timeout: float, body_timeout: float, max_connections: int, base: type[HttpToolsProtocol] | None = None
) -> type[HttpToolsProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with these limits (one class per server). ``base``: another
    subclass of uvicorn's httptools protocol to combine with (e.g. ``eim.bindings.tls.TlsHttpToolsProtocol``, which
    hands client certificates to the app); both cooperate through ``super()``."""
    bases: tuple[type, ...] = (GuardedHttpToolsProtocol,) if base is None else (base, GuardedHttpToolsProtocol)
    return type(
        "GuardedHttpToolsProtocol",
        bases,
        {
            "header_timeout": header_timeout,
            "body_timeout": body_timeout,
            "max_connections": max_connections,
            "tally": _Tally(),
        },
    )
