"""Push wake-ups across eIM workers: an operation queued through any worker reaches the worker holding the device's
CoAP observation.

A device observes ``/esipa/push/{EID}`` at *one* worker (the one its datagrams reach); the operator's REST call
may land on another. :class:`LocalWakeBus` (SQLite: one worker) hands the wake-up to this worker's observer tables.
:class:`PgWakeBus` (PostgreSQL, several workers) also sends ``NOTIFY eim_push, '<worker>:<EID>'`` on the store's
database; every worker ``LISTEN``s on its own connection (asyncpg ``add_listener``) and wakes its observers. A
worker skips its own notifications (it woke its observers already). The payload is the EID, which the database
users already see in the tables; nothing else is sent.

A wake-up that is lost (the listening connection was down) costs nothing but latency: the device polls, and every
re-registration is answered with the current "package waiting" state. The listener reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from typing import Any

from eim.interfaces import PushWaker

log = logging.getLogger("eim.push_bus")

CHANNEL = "eim_push"


class LocalWakeBus:
    """Wake-ups for this worker's observers only (SQLite, one worker)."""

    def __init__(self, local: list[PushWaker] | None = None) -> None:
        self.local: list[PushWaker] = list(local or [])

    def wake(self, eid: str) -> bool:
        hit = False
        for waker in self.local:
            hit = waker.wake(eid) or hit
        return hit

    def status(self, eid: str) -> dict[str, Any] | None:
        for waker in self.local:
            status = waker.status(eid)
            if status is not None:
                return status
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class PgWakeBus(LocalWakeBus):
    """Wake-ups over PostgreSQL ``LISTEN/NOTIFY`` to every worker on the same database."""

    def __init__(
        self,
        dsn: str,
        local: list[PushWaker] | None = None,
        *,
        worker: str | None = None,
        reconnect_max: float = 10.0,
    ) -> None:
        super().__init__(local)
        self.dsn = dsn
        self.worker = worker or f"{socket.gethostname()}-{os.getpid()}-{random.getrandbits(32):08x}"
        self.reconnect_max = reconnect_max
        self.received = 0  # wake-ups received from other workers (observability, tests)
        self._conn: Any = None
        self._ready = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    async def start(self, *, wait: float = 10.0) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="eim.push_bus listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), wait)

    async def stop(self) -> None:
        for task in list(self._sends):
            task.cancel()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        await self._close()

    async def _close(self) -> None:
        self._ready.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def _run(self) -> None:
        import asyncpg

        delay = 0.2
        while True:
            try:
                conn = await asyncpg.connect(self.dsn)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._received)
                self._conn = conn
                self._ready.set()
                delay = 0.2
                log.info("push bus listening", extra={"channel": CHANNEL, "worker": self.worker})
                await lost.wait()
                log.warning("push bus connection lost, reconnecting")
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("push bus cannot listen, retrying", extra={"error": str(exc), "delay": delay})
            finally:
                await self._close()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.reconnect_max)

    def _received(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        worker, _, eid = payload.rpartition(":")
        if worker == self.worker or len(eid) != 32 or not (eid.isascii() and eid.isdigit()):
            return
        self.received += 1
        super().wake(eid)

    def wake(self, eid: str) -> bool:
        """Wake this worker's observers now and tell the other workers (a NOTIFY, sent in the background)."""
        hit = super().wake(eid)
        try:
            task = asyncio.get_running_loop().create_task(self._notify(eid))
        except RuntimeError:
            return hit
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)
        return hit

    async def _notify(self, eid: str) -> None:
        conn = self._conn
        if conn is None:
            log.warning("push bus not connected: wake-up for other workers lost (the device polls)")
            return
        try:
            async with self._lock:  # one query at a time on the listening connection
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{self.worker}:{eid}")
        except Exception as exc:
            log.warning("push bus NOTIFY failed (the device polls)", extra={"error": str(exc)})

    async def drain(self) -> None:
        """Wait for the NOTIFYs sent so far (tests, orderly shutdown)."""
        while self._sends:
            await asyncio.gather(*list(self._sends), return_exceptions=True)
