"""The AT command engine for code that runs without an event loop: blocking pyserial reads, same deadlines.

``ipa --port PTY chip info`` and the other one-shot ES10 commands run their coroutines without asyncio
(:mod:`rsp.loopless`): starting asyncio costs more than the command's own work (docs/performance.md, 5b). This
engine has the interface of :class:`firmware_bridge.at.AtEngine` that :class:`~firmware_bridge.channel.AtApduChannel`
uses (``command``, ``long_mode``, listeners, ``last_command``/``last_answer``), with ``async`` methods that never
suspend: each exchange writes the command and reads the port in this thread until the final result or the
deadline. The answer is parsed by the same sans-I/O code (:mod:`firmware_bridge.at_parser`), and the rules are the
AtEngine's:

- the port is locked exclusively (``flock``, pyserial ``exclusive=True``); :class:`PortBusy` names the lock;
- a final result ends an exchange; URCs go to the listeners; no final result within the deadline is
  :class:`AtTimeout`, after which the next command first resynchronises (``AT+CMEE?``);
- the device disappearing is :class:`PortGone` at once; the next command reopens the port with backoff for up to
  ``reopen_timeout`` seconds.

Only one command runs at a time (one caller, no loop: nothing else can send meanwhile).
"""

from __future__ import annotations

import logging
import select
import time
from typing import Any

import serial

from firmware_bridge.at_base import REOPEN_FIRST_DELAY, SYNC_ANSWER, SYNC_COMMAND, AtEngineBase
from firmware_bridge.at_parser import AtResponse, Exchange
from firmware_bridge.errors import PortGone

log = logging.getLogger("firmware_bridge.at")


class BlockingAtEngine(AtEngineBase):
    """AT commands over one serial port, read in the calling thread (see the module docstring)."""

    def __init__(self, port: str, **options: Any) -> None:  # the options of AtEngineBase
        super().__init__(port, **options)
        self._serial: serial.Serial | None = None

    # ------------------------------------------------------------------ life cycle
    @property
    def is_open(self) -> bool:
        return self._serial is not None

    async def open(self) -> None:
        """Open and lock the port. :class:`PortBusy` if another program holds it, :class:`PortGone` if missing."""
        self._closed = False
        if self._serial is None:
            self._open_once()

    def _open_once(self) -> None:
        try:
            port = serial.Serial(
                self.port, baudrate=self.baudrate, exclusive=self.exclusive, rtscts=False, xonxoff=False, timeout=0
            )
        except (serial.SerialException, OSError) as exc:
            raise self._open_error(exc) from exc
        try:
            port.reset_input_buffer()
        except (serial.SerialException, OSError):
            pass
        self._serial = port
        self._opened()

    async def close(self) -> None:
        """Release the port (and its lock). Safe to call twice."""
        self._closed = True
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError) as exc:
                log.debug("closing %s: %s", self.port, exc)

    def _ensure_open(self, command: str) -> None:
        if self._serial is not None:
            return
        deadline = self._reopen_deadline(command)
        delay = REOPEN_FIRST_DELAY
        while True:
            try:
                self._open_once()
                return
            except PortGone as exc:  # PortBusy (another program holds the lock) goes up at once
                next_delay = self._reopen_backoff(command, deadline, delay, exc)
            time.sleep(delay)
            delay = next_delay

    def _lost(self, exc: BaseException) -> None:
        """The device went away under a read or write: drop the port (the next command reopens it)."""
        port, self._serial = self._serial, None
        self._lost_reason = str(exc) or type(exc).__name__
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass
        log.warning("port %s lost: %s", self.port, self._lost_reason)
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
        """Send one command line and wait (blocking) for its final result; errors as :meth:`AtEngine.command`."""
        self._ensure_open(command)
        if self._needs_sync:
            self._sync(timeout)
        return self._exchange_once(command, expect, timeout, check)

    def _exchange_once(
        self, command: str, expect: str | None, limit: float | None, check: bool, require: str | None = None
    ) -> AtResponse:
        deadline = self.default_timeout if limit is None else limit
        port = self._serial
        if port is None:
            raise PortGone(self.port, self._lost_reason or "not open", command)
        ex, data = self._begin_exchange(command, expect, require)
        answered = False
        try:
            try:
                port.write(data)
                end = time.monotonic() + deadline
                while not ex.done:
                    remaining = end - time.monotonic()
                    if remaining <= 0:
                        raise self._timed_out(ex, deadline)
                    # wait with select: setting pyserial's timeout would reconfigure the port (tcsetattr) each time
                    ready, _, _ = select.select([port.fileno()], [], [], remaining)
                    if ready:  # timeout 0: what is there (a hang-up reads nothing: SerialException, port gone)
                        chunk = port.read(max(1, port.in_waiting))
                        if chunk:
                            self._feed(ex, chunk)
            except (serial.SerialException, OSError) as exc:
                self._lost(exc)
                self._gone_during(ex, self._lost_reason)
                raise PortGone(self.port, self._lost_reason, command) from exc
            answered = True
        finally:  # timed out, interrupted or port gone: the next command resyncs
            self._end_exchange(ex, answered)
        return self._answer(command, ex.response(), check)

    def _feed(self, ex: Exchange, chunk: bytes) -> None:
        """Lines of ``chunk`` to the exchange in flight; URCs, and lines after its final result, to :meth:`_stray`
        (as AtEngine does with the rest of a read that ended an exchange)."""
        self.bytes_in += len(chunk)
        for line in self._splitter.feed(chunk):
            if ex.done:
                self._stray(line)
            elif ex.feed(line):
                self._dispatch_urc(line)

    def _sync(self, limit: float | None) -> None:
        """As :meth:`AtEngine._sync`: ``AT+CMEE?`` until its own answer; late answers before it are skipped."""
        per_try = self._sync_timeout(limit)
        self._exchange_once(SYNC_COMMAND, SYNC_ANSWER, per_try, False, require=SYNC_ANSWER)
        self._needs_sync = False
