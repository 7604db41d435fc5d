"""Helpers for the tests of the shipped systemd units (deploy/systemd/)."""

from __future__ import annotations

import shlex
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from tests.services import missing_service

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
PREFIX = "/opt/sgp32-stack"  # the one install layout (docs/install.md)


def unit_values(name: str, key: str) -> list[str]:
    """Every value of ``key`` in the unit file (repeated keys in order)."""
    out = []
    for line in (UNITS / name).read_text().splitlines():
        if line.startswith(f"{key}="):
            out.append(line.split("=", 1)[1])
    return out


def exec_start(name: str) -> list[str]:
    (line,) = unit_values(name, "ExecStart")
    return shlex.split(line)


def unit_environment(name: str) -> dict[str, str]:
    env = {}
    for value in unit_values(name, "Environment"):
        for word in shlex.split(value):
            k, v = word.split("=", 1)
            env[k] = v
    return env


def console_script(name: str) -> list[str]:
    """The venv's console script standing in for /opt/sgp32-stack/.venv/bin/NAME."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", f"{name}.cli"]


def systemd_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing_service(name, "apt-get install systemd (make venv does it: deploy/install-system-deps.sh)")
    return path  # type: ignore[return-value]


class NotifySocket:
    """The socket systemd gives a Type=notify service (NOTIFY_SOCKET): collects what the service sends."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")  # AF_UNIX paths are short
        self.path = f"{self.dir}/notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[str] = []

    def receive(self, timeout: float) -> str | None:
        self.sock.settimeout(timeout)
        try:
            msg = self.sock.recv(4096).decode()
        except TimeoutError:
            return None
        self.messages.append(msg)
        return msg

    def wait_for(self, wanted: str, timeout: float) -> bool:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.receive(max(0.05, deadline - time.monotonic())) == wanted:
                return True
        return False

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)
