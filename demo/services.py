"""Private services on loopback for the demo, the tests and the benchmarks: a Mosquitto broker and a PostgreSQL
cluster, each started on a free port in a temporary directory and stopped afterwards. A missing binary raises
:class:`ServiceUnavailable` naming what to install (``tests/services.py`` turns that into a test failure under CI
and a skip on a developer's machine).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port free for both TCP and UDP, chosen at random below the kernel's ephemeral range.

    Ports from the ephemeral range (what binding to port 0 hands out) are also taken by outgoing client
    sockets, so a port reserved that way can be grabbed before the server binds it. ``kind`` is accepted for
    callers that name the socket type; the port is checked for both.
    """
    lo, hi = 20000, 32000
    try:
        eph_lo = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        hi = min(hi, eph_lo)
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(200):
        port = random.randrange(lo, hi)
        try:
            for k in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, k) as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    with socket.socket(socket.AF_INET, kind) as s:  # fall back to the kernel's choice
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceUnavailable(RuntimeError):
    """A service binary is not installed; ``install`` says how to get it."""

    def __init__(self, what: str, install: str) -> None:
        self.what = what
        self.install = install
        super().__init__(f"{what} is not available: install it ({install})")


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


def _find(binary: str, extra_dirs: list[str]) -> str | None:
    found = shutil.which(binary)
    if found:
        return found
    for d in extra_dirs:
        p = Path(d) / binary
        if p.exists():
            return str(p)
    return None


class _Reaper:
    """Runs ``argv`` when this process dies, however it dies (SIGKILL included), so that a killed test worker or
    demo leaves no private broker or database behind. A ``sh`` in its own session waits on a pipe whose write end
    only this process holds (Python pipes are not inherited by children); when the pipe closes, it runs ``argv``.
    :meth:`cancel` ends it after an orderly stop."""

    def __init__(self, argv: list[str]) -> None:
        read_end, self._write_end = os.pipe()
        try:
            self._proc = subprocess.Popen(
                ["sh", "-c", 'read _ || true; exec "$@"', "reaper", *argv],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(read_end)

    def cancel(self) -> None:
        self._proc.kill()
        self._proc.wait(5)
        os.close(self._write_end)


# ---------------------------------------------------------------- Mosquitto
@dataclass
class Broker:
    host: str
    port: int
    process: subprocess.Popen
    config: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def start_again(self) -> None:
        """Restart on the same port (for broker-restart tests)."""
        self.stop()
        self.process = subprocess.Popen(
            [self.process.args[0], "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_port(self.port):
            raise RuntimeError("mosquitto did not come back")


def mosquitto_binary() -> str | None:
    return _find("mosquitto", ["/usr/sbin", "/usr/local/sbin"])


@contextlib.contextmanager
def run_mosquitto(extra_config: str = "") -> Iterator[Broker]:
    binary = mosquitto_binary()
    if binary is None:
        raise ServiceUnavailable("Mosquitto", "apt-get install mosquitto")
    tmp = Path(tempfile.mkdtemp(prefix="mosq-"))
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "set_tcp_nodelay true\n"
        "max_queued_messages 100000\n"
        f"pid_file {tmp / 'mosquitto.pid'}\n"
        f"{extra_config}\n"
    )
    if os.geteuid() == 0:
        conf.write_text(conf.read_text() + "user root\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    broker = Broker("127.0.0.1", port, proc, conf)
    # on an abrupt end: stop the broker of this config (start_again replaces the process), then clean up
    reaper = _Reaper(["sh", "-c", 'kill "$(cat "$0/mosquitto.pid")"; rm -rf "$0"', str(tmp)])
    try:
        if not wait_port(port):
            proc.kill()
            raise RuntimeError(f"mosquitto did not listen on {port}")
        yield broker
    finally:
        reaper.cancel()
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- PostgreSQL
@dataclass
class Postgres:
    host: str
    port: int
    dsn: str
    datadir: Path


def postgres_bindir() -> str | None:
    for cand in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (cand / "initdb").exists() and (cand / "postgres").exists():
            return str(cand)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return str(Path(initdb).parent)
    return None


@contextlib.contextmanager
def run_postgres() -> Iterator[Postgres]:
    """A private PostgreSQL cluster (initdb in a temporary directory, free port, trust auth)."""
    bindir = postgres_bindir()
    if bindir is None:
        raise ServiceUnavailable("PostgreSQL server binaries (initdb, pg_ctl)", "apt-get install postgresql")
    tmp = Path(tempfile.mkdtemp(prefix="pg-"))
    datadir = tmp / "data"
    port = free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: run the private cluster as the 'postgres' system user.
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise ServiceUnavailable(
                "a 'postgres' system user to run a private cluster as root", "apt-get install postgresql"
            ) from None
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    env = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")
    subprocess.run(
        [*as_user, f"{bindir}/initdb", "-D", str(datadir), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    opts = (
        f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={tmp} -c fsync=off -c max_connections=200"
    )
    subprocess.run(
        [*as_user, f"{bindir}/pg_ctl", "-D", str(datadir), "-o", opts, "-l", str(tmp / "log"), "-w", "start"],
        check=True,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    stop = [*as_user, f"{bindir}/pg_ctl", "-D", str(datadir), "-m", "immediate", "-w", "stop"]
    reaper = _Reaper(["sh", "-c", '"$@"; rm -rf "$0"', str(tmp), *stop])
    try:
        yield Postgres("127.0.0.1", port, f"postgresql://postgres@127.0.0.1:{port}/postgres", datadir)
    finally:
        reaper.cancel()
        subprocess.run(
            [*as_user, f"{bindir}/pg_ctl", "-D", str(datadir), "-m", "immediate", "-w", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        shutil.rmtree(tmp, ignore_errors=True)
