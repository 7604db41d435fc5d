"""The AT command engine: one command at a time over a serial port, with a deadline on every exchange.

asyncio over pyserial through pyserial-asyncio-fast (the port is non-blocking and watched by the loop; opening and
closing run in the executor), so nothing here blocks the event loop.

- one command in flight (an :class:`asyncio.Lock`), each with a deadline: ``timeout`` (short, 10 s) or, inside
  :meth:`AtEngine.long_mode`, ``long_timeout`` (minutes, while a package loads);
- final results ``OK`` / ``ERROR`` / ``+CME ERROR: n|text`` / ``+CMS ERROR: n`` end an exchange; echo is dropped;
- unsolicited result codes go to the listeners (:meth:`add_urc_listener`) and never into an answer;
- the port is locked exclusively (``flock`` through pyserial ``exclusive=True``) for the whole session;
- when the device disappears (USB re-enumeration after a profile switch, a modem reset) the exchange in flight
  fails with :class:`PortGone` at once, and the next command reopens the port with backoff for up to
  ``reopen_timeout`` seconds; port listeners hear ``"lost"`` and ``"reopened"``;
- after a timeout or a reopen the engine resynchronises (``AT+CMEE?`` until its own answer comes back) before the
  next command, so a late answer is never taken for the next command's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import serial
import serial_asyncio_fast

from firmware_bridge.at_base import (  # noqa: F401 - the defaults are part of this module's interface
    DEFAULT_LONG_TIMEOUT,
    DEFAULT_REOPEN_TIMEOUT,
    DEFAULT_TIMEOUT,
    REOPEN_FIRST_DELAY,
    SYNC_ANSWER,
    SYNC_COMMAND,
    AtEngineBase,
)
from firmware_bridge.at_parser import AtResponse
from firmware_bridge.errors import PortGone

log = logging.getLogger("firmware_bridge.at")


class _Protocol(asyncio.Protocol):
    def __init__(self, engine: AtEngine) -> None:
        self.engine = engine
        self.lost = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.engine._on_data(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self.engine._on_lost(self, exc)


class AtEngine(AtEngineBase):
    """AT commands over one serial port. Use as ``async with AtEngine(port) as at: await at.command("AT")``."""

    def __init__(self, port: str, **options: Any) -> None:  # the options of AtEngineBase
        super().__init__(port, **options)
        self._transport: serial_asyncio_fast.SerialTransport | None = None
        self._protocol: _Protocol | None = None
        self._lock = asyncio.Lock()
        self._future: asyncio.Future[AtResponse] | None = None

    # ------------------------------------------------------------------ life cycle
    @property
    def is_open(self) -> bool:
        return self._transport is not None

    async def open(self) -> None:
        """Open and lock the port. :class:`PortBusy` if another program holds it, :class:`PortGone` if missing."""
        self._closed = False
        if self._transport is None:
            await self._open_once()

    async def _open_once(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await serial_asyncio_fast.create_serial_connection(
                loop,
                lambda: _Protocol(self),
                self.port,
                baudrate=self.baudrate,
                exclusive=self.exclusive,
                rtscts=False,
                xonxoff=False,
            )
        except (serial.SerialException, OSError) as exc:
            raise self._open_error(exc) from exc
        with contextlib.suppress(Exception):
            transport.serial.reset_input_buffer()
        self._transport = transport
        self._protocol = protocol
        self._opened()

    async def close(self) -> None:
        """Release the port (and its lock). Safe to call twice."""
        self._closed = True
        transport, protocol = self._transport, self._protocol
        self._transport = None
        if transport is not None and protocol is not None:
            transport.abort()  # no tcdrain: a stuck peer must not keep us here
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(protocol.lost), 5.0)

    async def _ensure_open(self, command: str) -> None:
        if self._transport is not None:
            return
        deadline = self._reopen_deadline(command)
        delay = REOPEN_FIRST_DELAY
        while True:
            try:
                await self._open_once()
                return
            except PortGone as exc:  # PortBusy (another program holds the lock) goes up at once
                next_delay = self._reopen_backoff(command, deadline, delay, exc)
            await asyncio.sleep(delay)
            delay = next_delay

    # ------------------------------------------------------------------ listeners
    def urc_queue(self, maxsize: int = 256) -> tuple[asyncio.Queue[str], Callable[[], None]]:
        """A queue that receives URCs (oldest dropped when full) and its unsubscribe function."""
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize)

        def put(line: str) -> None:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(line)

        return queue, self.add_urc_listener(put)

    # ------------------------------------------------------------------ transport callbacks
    def _on_data(self, protocol: _Protocol, data: bytes) -> None:
        if protocol is not self._protocol:
            return
        self.bytes_in += len(data)
        for line in self._splitter.feed(data):
            self._on_line(line)

    def _on_line(self, line: str) -> None:
        ex, fut = self._exchange, self._future
        if ex is not None and fut is not None and not fut.done():
            if not ex.feed(line):
                if ex.done:
                    fut.set_result(ex.response())
                return
            self._dispatch_urc(line)
            return
        self._stray(line)

    def _on_lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        self._transport = None
        self._lost_reason = str(exc) if exc else "closed"
        if self._closed:
            return
        log.warning("port %s lost: %s", self.port, self._lost_reason)
        fut = self._future
        if fut is not None and not fut.done():
            cmd = self._exchange.command if self._exchange else None
            fut.set_exception(PortGone(self.port, self._lost_reason, cmd))
        self._notify_port("lost")

    # ------------------------------------------------------------------ commands
    async def command(
        self,
        command: str,
        *,
        expect: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the deadline of one AT exchange is part of the contract
        check: bool = True,
    ) -> AtResponse:
        """Send one command line and wait for its final result.

        ``expect`` is the answer prefix (``"+CSIM:"``). Raises :class:`AtTimeout` when no final result comes within
        the deadline, :class:`AtError` for an error final result (unless ``check=False``), :class:`PortGone` when
        the device disappears.
        """
        async with self._lock:
            await self._ensure_open(command)
            if self._needs_sync:
                await self._sync(timeout)
            return await self._exchange_once(command, expect, timeout, check)

    async def _exchange_once(
        self, command: str, expect: str | None, limit: float | None, check: bool, require: str | None = None
    ) -> AtResponse:
        deadline = self.default_timeout if limit is None else limit
        transport = self._transport
        if transport is None:
            raise PortGone(self.port, self._lost_reason or "not open", command)
        loop = asyncio.get_running_loop()
        ex, data = self._begin_exchange(command, expect, require)
        self._future = fut = loop.create_future()
        answered = False
        try:
            transport.write(data)
            async with asyncio.timeout(deadline):
                resp = await fut
            answered = True
        except TimeoutError:
            raise self._timed_out(ex, deadline) from None
        except PortGone as exc:
            self._gone_during(ex, exc.reason)
            raise
        finally:  # timed out, cancelled or port gone: the next command resyncs
            self._end_exchange(ex, answered)
            self._future = None
        return self._answer(command, resp, check)

    async def _sync(self, limit: float | None) -> None:
        """Make sure the next answer belongs to the next command.

        After a timeout the modem may still answer the old command. ``AT+CMEE?`` is sent once; every final result
        that comes before a ``+CMEE:`` line closes a late answer and is skipped with its lines.
        """
        per_try = self._sync_timeout(limit)
        await self._exchange_once(SYNC_COMMAND, SYNC_ANSWER, per_try, False, require=SYNC_ANSWER)
        self._needs_sync = False
