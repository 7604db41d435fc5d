"""Running async code without an event loop, for the IPA's one-shot commands on a local card or port.

``ipa --card STATE chip info`` (and the other one-shot ES10 commands on the in-process software eUICC) runs the
same coroutines as the daemon (``Agent.start``, ``Es10Client``, ``StateStore``), but nothing in them ever has to
wait: the card answers in the calling thread and the state file is written in it. Importing :mod:`asyncio` and
starting a loop for that is about a quarter of the command's instructions (docs/performance.md, 5b). So:

- :func:`run` drives a coroutine to its end by ``send(None)`` and raises :class:`NeedsLoop` if it ever suspends
  (something awaited a real future: a serial port, a socket, a timer). The caller picks ``run`` only where
  nothing can suspend; with a modem or a network it uses ``asyncio.run``.
- :func:`blocking` is the one seam in the shared code: blocking work (disk I/O) goes to a worker thread when a
  loop runs, and runs inline when there is none (nothing else could run meanwhile anyway).
- :func:`sleep` and :class:`Lock` are asyncio's under a loop and their plain forms without one;
- :func:`loop_running` and :func:`cancelled_error` answer without importing :mod:`asyncio` when nobody has.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class NeedsLoop(RuntimeError):
    """A coroutine driven by :func:`run` suspended: it waits for I/O or time and needs an event loop."""


class _NeverRaised(BaseException):
    """Stands for ``asyncio.CancelledError`` where asyncio was never imported (so nothing can be cancelled)."""


def loop_running() -> bool:
    """Is an asyncio event loop running in this thread? (No import of asyncio when it was never imported.)"""
    aio = sys.modules.get("asyncio")
    return aio is not None and aio.events._get_running_loop() is not None


def cancelled_error() -> type[BaseException]:
    """``asyncio.CancelledError``, or a class nothing raises when asyncio was never imported: for ``except``."""
    aio = sys.modules.get("asyncio")
    return aio.CancelledError if aio is not None else _NeverRaised


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` off the loop (``asyncio.to_thread``) when a loop runs; inline when driven by :func:`run`."""
    if not loop_running():
        return fn(*args)
    import asyncio

    return await asyncio.to_thread(fn, *args)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end in this thread without an event loop; :class:`NeedsLoop` if it suspends."""
    try:
        awaited = coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()  # its finally blocks run (GeneratorExit): nothing is left half-open
    raise NeedsLoop(f"{getattr(coro, '__qualname__', coro)} waited for {awaited!r}: it needs an event loop")


async def sleep(seconds: float) -> None:
    """``asyncio.sleep`` under a loop; ``time.sleep`` without one (a retry's backoff in a one-shot command)."""
    if not loop_running():
        import time

        time.sleep(seconds)  # noqa: ASYNC251 - no loop runs: nothing else is kept waiting
        return
    import asyncio

    await asyncio.sleep(seconds)


class Lock:
    """``async with lock:`` - an :class:`asyncio.Lock` (made at first use) under a loop. Without a loop there is one
    caller and nothing runs meanwhile, so the lock is a flag; taking it twice would wait forever under a loop and
    raises :class:`NeedsLoop` here."""

    def __init__(self) -> None:
        self._lock: Any = None
        self._held = False  # taken without a loop

    async def __aenter__(self) -> None:
        if loop_running():
            if self._lock is None:
                import asyncio

                self._lock = asyncio.Lock()
            await self._lock.acquire()
            return
        if self._held or (self._lock is not None and self._lock.locked()):
            raise NeedsLoop("the lock is held: waiting for it needs an event loop")
        self._held = True

    async def __aexit__(self, *exc: object) -> None:
        if self._held:
            self._held = False
        else:
            self._lock.release()
