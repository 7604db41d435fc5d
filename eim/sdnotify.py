"""systemd's service notification protocol (``sd_notify(3)``) for ``eim serve`` under ``Type=notify``.

``READY=1`` once every binding listens, ``WATCHDOG=1`` from the event loop every half of ``WatchdogSec=``
(``WATCHDOG_USEC``), ``STOPPING=1`` on SIGTERM. A loop stuck in blocking code stops the pings and systemd restarts
the worker. Without ``NOTIFY_SOCKET`` (not started by systemd) every call does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket


def notify(message: str) -> bool:
    """Send one notification; False when not under systemd or the socket is gone (never raises)."""
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr.startswith("@"):  # abstract namespace
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC), or None when systemd asked for none (or for another pid)."""
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


async def _ping(interval: float) -> None:
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def start_watchdog() -> asyncio.Task | None:
    """A task that pings the watchdog from the running loop, or None when no watchdog is configured."""
    interval = watchdog_interval()
    if interval is None or not os.environ.get("NOTIFY_SOCKET"):
        return None
    return asyncio.create_task(_ping(interval), name="eim systemd watchdog")


async def stop_watchdog(task: asyncio.Task | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
