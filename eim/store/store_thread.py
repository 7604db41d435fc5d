"""One dedicated thread that runs the SQLite store's calls for the event loop (:mod:`eim.store.sqlite`).

``loop.run_in_executor`` with a one-worker ``ThreadPoolExecutor`` did the same with more machinery per call: a
``concurrent.futures.Future`` chained to an asyncio future through two callbacks, a work item, and a semaphore
taken and given back (a ``threading.Condition``) on every submit and every completed call. In a signed PSMO run
py-spy put ~10 % of the event loop's GIL-holding time in ``ThreadPoolExecutor.submit`` alone
(docs/performance.md, section 1c). Here a call is a tuple on a ``queue.SimpleQueue`` and its result comes back
through ``loop.call_soon_threadsafe`` onto an asyncio future: one hop each way.

Calls run one at a time, in the order they were made. A caller that stops waiting (its task cancelled) does not
stop the call: it runs to its end and its result is dropped (an executor skipped a call cancelled before it had
started; the store's callers already treat a cancelled write as "outcome unknown"). The thread is a daemon: a store
that was never closed does not hold up the interpreter's exit, and a group it was running then ends uncommitted,
with nobody told it succeeded.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any


def _settle(fut: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if fut.done():  # the caller went away (cancelled)
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


class StoreThread:
    """A thread named ``name`` that runs ``fn(*args)`` for :meth:`call`, one call at a time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args, loop, fut = item
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # handed to the caller, as an executor would
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(_settle, fut, result, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._closed:
            raise RuntimeError(f"{self.name}: the store thread is stopped")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put((fn, args, loop, fut))
        return await fut

    def shutdown(self, wait: bool = True) -> None:
        """No more calls; the thread ends after those already queued (``wait``: this returns when it has)."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        if wait:
            self._thread.join()
