"""What the two AT engines share: options and counters, URC and port listeners, the long-deadline mode, the
handling of lines outside an exchange and of errors opening the port.

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
from collections.abc import Callable, Iterator

from firmware_bridge.at_parser import LineSplitter, final_result, is_urc
from firmware_bridge.errors import PortBusy, PortGone

log = logging.getLogger("firmware_bridge.at")

DEFAULT_TIMEOUT = 10.0
DEFAULT_LONG_TIMEOUT = 600.0
DEFAULT_REOPEN_TIMEOUT = 30.0


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
