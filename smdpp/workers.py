"""Several SM-DP+ worker processes on one port: ``smdpp serve --workers N`` (``auto``: one per CPU).

How it runs:

1. The supervisor (the ``smdpp serve`` process) loads the credentials, creates the store's tables once, binds and
   listens on the port, and only then forks the workers. It opens no database connection, starts no thread and no
   event loop before forking.
2. Each worker builds its own application (its own SQLite connection, its own event loop) and runs uvicorn on the
   inherited listening socket; the kernel hands each new connection to whichever worker accepts it first. Every
   answer names the worker in ``X-Smdpp-Worker`` (its pid).
3. What one worker learns, every worker knows: orders, RSP sessions (transactionId -> session, ``smdpp.session``),
   confirmation-code attempts, download attempts, ICCID counters, eUICC certificates and notifications all live in
   the store's SQLite file (WAL, one ``BEGIN IMMEDIATE`` transaction per change). A download whose
   initiateAuthentication worker A answered finishes on worker B. Per-process caches hold only what is derived
   from files and the order (profile packages, pre-protected segments): a worker that misses one computes it.
4. A worker that dies (killed, crashed) is replaced by a new one on the same socket; connections it had open are
   lost, connections waiting to be accepted are not (the listening socket stays open in the supervisor). If
   workers die :data:`MAX_DEATHS` times within :data:`DEATH_WINDOW` seconds, the supervisor stops the others and
   exits with status 1 and a log line naming the last worker's exit status (a worker that cannot start at all, e.g.
   an unreadable data directory, ends there quickly instead of being restarted forever).
5. SIGTERM or SIGINT to the supervisor is passed on to the workers (uvicorn's graceful shutdown, at most
   ``timeout_graceful_shutdown`` seconds); workers still alive :data:`STOP_TIMEOUT` seconds later are killed. Exit
   status 0. A supervisor that is killed outright (SIGKILL) takes its workers with it: each asked the kernel for a
   SIGTERM when its parent dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time

import uvicorn

from smdpp.config import SmdppConfig
from smdpp.credentials import Credentials

log = logging.getLogger("smdpp.workers")

MAX_DEATHS = 5
DEATH_WINDOW = 60.0
STOP_TIMEOUT = 10.0
BACKLOG = 2048


def worker_count(value: str) -> int:
    """``--workers``: a positive number, or ``auto`` for one per CPU this process may run on."""
    if value == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 256:
        raise ValueError(f"--workers: a number from 1 to 256 or auto, got {value!r}")
    return int(value)


def listen_socket(host: str, port: int) -> socket.socket:
    """The listening socket the workers share (bound and listening before any worker starts)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def _stop_with_parent(parent: int) -> None:
    """Linux ``prctl(PR_SET_PDEATHSIG, SIGTERM)``: a worker whose supervisor is gone (even by SIGKILL) stops too,
    instead of serving on without anyone to restart it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the supervisor died before the prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(config: SmdppConfig, credentials: Credentials, sock: socket.socket, parent: int) -> int:
    """In the forked worker: its own app, store connection and event loop on the shared socket."""
    from smdpp.app import create_app
    from smdpp.server import uvicorn_config

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)  # uvicorn installs its own handlers in serve()
    _stop_with_parent(parent)
    app = create_app(config, credentials)
    try:
        uvicorn.Server(uvicorn_config(config, credentials, app)).run(sockets=[sock])
    finally:
        app.state.es9_threads.shutdown(wait=True)
        app.state.ctx.store.close()
    return 0


class Supervisor:
    """Forks, watches and stops the workers (see the module docstring)."""

    def __init__(self, config: SmdppConfig, credentials: Credentials, sock: socket.socket, workers: int) -> None:
        self.config = config
        self.credentials = credentials
        self.sock = sock
        self.workers = workers
        self.children: dict[int, int] = {}  # pid -> slot
        self.deaths: list[float] = []
        self.stopping = False

    def _spawn(self, slot: int) -> int:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                code = _worker_main(self.config, self.credentials, self.sock, parent)
            except BaseException:  # a worker never returns into the supervisor's loop
                log.exception("worker %d: failed", os.getpid())
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = slot
        return pid

    def _signal(self, signum: int, frame: object) -> None:
        if not self.stopping:
            log.info("supervisor: %s, stopping %d workers", signal.Signals(signum).name, len(self.children))
        self.stopping = True
        self._kill(signal.SIGTERM)

    def _kill(self, sig: int) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def run(self) -> int:
        """Until a stop signal (0) or too many worker deaths (1)."""
        previous = {sig: signal.signal(sig, self._signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for slot in range(self.workers):
                self._spawn(slot)
            log.info("supervisor: workers %s", ", ".join(map(str, self.children)))
            return self._watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.sock.close()

    def _watch(self) -> int:
        stop_deadline: float | None = None
        failed = False
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                if self.stopping and stop_deadline is None:
                    stop_deadline = time.monotonic() + STOP_TIMEOUT
                if stop_deadline is not None and time.monotonic() > stop_deadline:
                    log.warning("supervisor: workers %s still running; killing them", list(self.children))
                    self._kill(signal.SIGKILL)
                    stop_deadline = time.monotonic() + STOP_TIMEOUT
                time.sleep(0.1)
                continue
            slot = self.children.pop(pid, None)
            if slot is None or self.stopping:
                continue
            how = _exit_text(status)
            now = time.monotonic()
            self.deaths = [t for t in self.deaths if now - t < DEATH_WINDOW] + [now]
            if len(self.deaths) >= MAX_DEATHS:
                log.error(
                    "supervisor: worker %d %s; %d workers died within %.0f s: stopping the SM-DP+",
                    pid,
                    how,
                    len(self.deaths),
                    DEATH_WINDOW,
                )
                failed = True
                self.stopping = True
                self._kill(signal.SIGTERM)
                continue
            new = self._spawn(slot)
            log.warning("supervisor: worker %d %s; started worker %d in its place", pid, how, new)
        return 1 if failed else 0


def _exit_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def serve_workers(config: SmdppConfig, credentials: Credentials, workers: int) -> int:
    """Run ``workers`` worker processes on ``config.host:config.port``; the supervisor's exit status."""
    from smdpp.session import SessionStore
    from smdpp.store import OrderStore

    store = OrderStore.in_dir(config.data_dir)  # the tables, once, before any worker opens the file
    SessionStore(store)
    store.close()
    sock = listen_socket(config.host, config.port)
    return Supervisor(config, credentials, sock, workers).run()
