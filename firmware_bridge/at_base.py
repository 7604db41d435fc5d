"""What the two AT engines share: options and counters, URC and port listeners, the long-deadline mode, the
handling of lines outside an exchange and of errors opening the port, the reopen backoff, and the I/O-free steps
of an exchange (starting it, noting a timeout or a lost port, ending it, checking its answer).

- :class:`firmware_bridge.at.AtEngine`: asyncio over pyserial-asyncio-fast, for everything that runs in an event
  loop (the daemon, downloads, the virtual modem's tests);
- :class:`firmware_bridge.at_blocking.BlockingAtEngine`: blocking pyserial reads with the same deadlines, for a
  one-shot command that runs without an event loop (``ipa --port PTY chip info``, :mod:`rsp.loopless`).

Both feed the same sans-I/O parser (:mod:`firmware_bridge.at_parser`: ``LineSplitter``, ``Exchange``), so an
answer is read the same way whichever engine carried it. This module imports neither asyncio nor pyserial.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Self

from firmware_bridge.at_parser import AtResponse, Exchange, LineSplitter, final_result, is_urc
from firmware_bridge.errors import AtError, AtTimeout, PortBusy, PortGone

log = logging.getLogger("firmware_bridge.at")

DEFAULT_TIMEOUT = 10.0
DEFAULT_LONG_TIMEOUT = 600.0
DEFAULT_REOPEN_TIMEOUT = 30.0

# The resynchronisation exchange: its own answer (``+CMEE:``) tells the late answers before it apart.
SYNC_COMMAND = "AT+CMEE?"
SYNC_ANSWER = "+CMEE:"
SYNC_MAX_TIMEOUT = 2.0
# The reopen backoff: first wait, and the longest wait between two tries.
REOPEN_FIRST_DELAY = 0.05
REOPEN_MAX_DELAY = 1.0


class AtEngineBase:
    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 115200,
        timeout: float = DEFAULT_TIMEOUT,
        long_timeout: float = DEFAULT_LONG_TIMEOUT,
        reopen_timeout: float = DEFAULT_REOPEN_TIMEOUT,
        exclusive: bool = True,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.timeout = timeout
        self.long_timeout = long_timeout
        self.reopen_timeout = reopen_timeout
        self.exclusive = exclusive
        self.bytes_in = 0
        self.bytes_out = 0
        self.commands = 0
        self.generation = 0  # how many times the port was opened
        self._splitter = LineSplitter()
        self._exchange = None  # the firmware_bridge.at_parser.Exchange in flight
        self._urc_listeners: list[Callable[[str], None]] = []
        self._port_listeners: list[Callable[[str], None]] = []
        self._long = 0
        self._needs_sync = False
        self._closed = False
        self._lost_reason = ""
        # The last exchange, for diagnostics (the probe reports the exact command and answer of a failure).
        self.last_command: str | None = None
        self.last_answer: tuple[str, ...] = ()

    # ------------------------------------------------------------------ life cycle
    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ opening
    def _open_error(self, exc: BaseException) -> PortBusy | PortGone:
        """The error for a port that did not open: :class:`PortBusy` when another program holds its lock."""
        text = str(exc)
        if "lock" in text.lower():
            return PortBusy(self.port, text)
        return PortGone(self.port, text)

    def _opened(self) -> None:
        """Bookkeeping once the port is open: a reopen means a resync before the next command."""
        self._splitter.clear()
        self.generation += 1
        if self.generation > 1:
            self._needs_sync = True
            log.info("port %s reopened (generation %d)", self.port, self.generation)
            self._notify_port("reopened")

    def _reopen_deadline(self, command: str) -> float:
        """The monotonic time until which a lost port is retried; :class:`PortGone` if the engine was closed."""
        if self._closed:
            raise PortGone(self.port, "engine closed", command)
        return time.monotonic() + self.reopen_timeout

    def _reopen_backoff(self, command: str, deadline: float, delay: float, last: PortGone) -> float:
        """After a failed reopen: :class:`PortGone` when waiting ``delay`` more passes ``deadline``, else the delay
        after this one."""
        if time.monotonic() + delay > deadline:
            reason = f"not back after {self.reopen_timeout:g} s ({last.reason})"
            raise PortGone(self.port, reason, command) from last
        return min(delay * 2, REOPEN_MAX_DELAY)

    # ------------------------------------------------------------------ listeners
    def add_urc_listener(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(line)`` for every unsolicited result code. Returns a function that unsubscribes."""
        self._urc_listeners.append(callback)
        return lambda: self._urc_listeners.remove(callback) if callback in self._urc_listeners else None

    def add_port_listener(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(event)`` with ``"lost"`` / ``"reopened"``. Returns a function that unsubscribes."""
        self._port_listeners.append(callback)
        return lambda: self._port_listeners.remove(callback) if callback in self._port_listeners else None

    def _notify_port(self, event: str) -> None:
        for cb in list(self._port_listeners):
            try:
                cb(event)
            except Exception:
                log.exception("port listener failed on %s", event)

    def _dispatch_urc(self, line: str) -> None:
        log.debug("URC %r", line)
        for cb in list(self._urc_listeners):
            try:
                cb(line)
            except Exception:
                log.exception("URC listener failed on %r", line)

    def _stray(self, line: str) -> None:
        """A line that belongs to no exchange in flight: a URC, or a late answer (logged, dropped)."""
        if is_urc(line):
            self._dispatch_urc(line)
        elif final_result(line) is not None:
            log.debug("stray final result %r (late answer?)", line)
        else:
            log.debug("stray line %r", line)

    # ------------------------------------------------------------------ deadlines
    @contextlib.contextmanager
    def long_mode(self) -> Iterator[None]:
        """Inside this block the default deadline is ``long_timeout`` (package or profile loading)."""
        self._long += 1
        try:
            yield
        finally:
            self._long -= 1

    @property
    def default_timeout(self) -> float:
        return self.long_timeout if self._long else self.timeout

    # ------------------------------------------------------------------ exchanges
    def _begin_exchange(self, command: str, expect: str | None, require: str | None) -> tuple[Exchange, bytes]:
        """A new exchange in flight for ``command``, and the bytes to write (counted)."""
        ex = self._exchange = Exchange(command, expect, require=require)
        data = (command + "\r").encode("latin-1")
        self.commands += 1
        self.bytes_out += len(data)
        self.last_command, self.last_answer = command, ()
        log.debug("-> %s", command)
        return ex, data

    def _timed_out(self, ex: Exchange, deadline: float) -> AtTimeout:
        """The error for no final result within ``deadline`` seconds (noted in ``last_answer``)."""
        self.last_answer = (*ex.lines, f"<no final result within {deadline:g} s>")
        return AtTimeout(ex.command, deadline, ex.lines)

    def _gone_during(self, ex: Exchange, reason: str) -> None:
        """Note in ``last_answer`` that the port went away during the exchange."""
        self.last_answer = (*ex.lines, f"<port gone: {reason}>")

    def _end_exchange(self, ex: Exchange | None, answered: bool) -> None:
        """The exchange is over: without an answer (timed out, interrupted, port gone) the next command resyncs."""
        if not answered:  # an answer may still be on its way
            self._needs_sync = True
        if ex is not None and ex.skipped:
            log.info("resync: skipped %d late answer(s)", ex.skipped)
        self._exchange = None

    def _answer(self, command: str, resp: AtResponse, check: bool) -> AtResponse:
        """The answer of an exchange, noted in ``last_answer``; :class:`AtError` for an error result if ``check``."""
        self.last_answer = (*resp.lines, resp.final)
        log.debug("<- %s %s", list(resp.lines), resp.final)
        if check and not resp.ok:
            raise AtError(command, resp.final, resp.lines)
        return resp

    def _sync_timeout(self, limit: float | None) -> float:
        """The deadline of the resync exchange; the splitter drops any partial line first."""
        self._splitter.clear()
        return min(self.timeout if limit is None else limit, SYNC_MAX_TIMEOUT)
