"""``ipa run``: the daemon - eIM Package Retrieval (SGP.32 v1.2 §3.1.1.1) by polling or push until SIGTERM/SIGINT
(:meth:`ipa.agent.Agent.run`), the status file for ``ipa status`` (:mod:`ipa.status`) and systemd's notify protocol
(``READY=1``, ``STOPPING=1``, ``WATCHDOG=1`` every half ``WATCHDOG_USEC``; sd_notify(3)). Loaded by
:func:`ipa.cli.run_command` for ``run`` only.
"""

from __future__ import annotations

import contextlib
import os
import signal

from ipa.cli import EXIT_OK, Output, log
from ipa.cli import _with_agent as with_agent
from ipa.config import IpaConfig


async def run_daemon(config: IpaConfig, out: Output, state: str | None) -> int:
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    async def daemon(agent):
        log.warning("ipa running: EID %s", agent.ctx.eid.hex().upper())
        if os.environ.get("NOTIFY_SOCKET"):
            sd_notify("READY=1")
        watchdog = asyncio.create_task(sd_watchdog()) if watchdog_interval() else None
        status = None
        if agent.store.path is not None:  # `ipa status` reads it (ipa.status): next to the state file, per EID
            from ipa.status import StatusWriter, status_path

            status = StatusWriter(status_path(agent.store.path, agent.ctx.eid), agent.ctx.eid)
        try:
            await agent.run(stop, status)
        finally:
            sd_notify("STOPPING=1")
            if watchdog is not None:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
        return None

    await with_agent(config, out, daemon, state=state, progress=False)  # the daemon logs, it prints no progress
    log.warning("ipa stopped")
    return EXIT_OK


def sd_notify(msg: str) -> None:
    import socket

    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.send(msg.encode())


def watchdog_interval() -> float | None:
    """Half of systemd's WATCHDOG_USEC (WatchdogSec=), or None: no watchdog asked for this process."""
    if not os.environ.get("NOTIFY_SOCKET") or os.environ.get("WATCHDOG_PID", str(os.getpid())) != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


async def sd_watchdog() -> None:
    """WATCHDOG=1 from the event loop: a loop stuck in blocking code stops the pings and systemd restarts us."""
    import asyncio

    interval = watchdog_interval() or 30.0
    while True:
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(interval)
