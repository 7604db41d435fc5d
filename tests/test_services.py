"""The private services of demo/services.py leave nothing behind, even when their owner is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from demo.services import mosquitto_binary, postgres_bindir
from tests.services import missing_service

ROOT = Path(__file__).resolve().parent.parent

OWNER = textwrap.dedent(
    """
    import sys, time
    from demo.services import run_mosquitto, run_postgres
    with run_mosquitto() as broker, run_postgres() as pg:
        print(broker.process.pid, broker.config.parent, pg.datadir.parent, flush=True)
        time.sleep(120)
    """
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose; the broker's parent was killed, so init reaps it
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def postgres_running_in(directory: Path) -> bool:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return any("postgres" in line and str(directory) in line for line in out.splitlines())


def wait_until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_sigkilled_owner_leaves_no_broker_or_database() -> None:
    if mosquitto_binary() is None:
        missing_service("Mosquitto", "apt-get install mosquitto")
    if postgres_bindir() is None:
        missing_service("PostgreSQL server binaries (initdb, pg_ctl)", "apt-get install postgresql")
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = owner.stdout.readline()
        assert line, owner.stderr.read()
        pid_text, broker_dir, pg_dir = line.split()
        broker_pid, broker_dir_path, pg_dir_path = int(pid_text), Path(broker_dir), Path(pg_dir)
        assert alive(broker_pid) and postgres_running_in(pg_dir_path)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
    assert wait_until(lambda: not alive(broker_pid)), "the private Mosquitto outlived its owner"
    assert wait_until(lambda: not postgres_running_in(pg_dir_path)), "the private PostgreSQL outlived its owner"
    assert wait_until(lambda: not broker_dir_path.exists() and not pg_dir_path.exists()), "temporary dirs left"
