"""Process management for the demo and the end-to-end tests: start real programs, wait for them, stop them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from demo.services import free_port as free_port  # re-exported: tests and the demo take it from here

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """Path of one of our console scripts in the running virtual environment."""
    p = BIN / name
    return str(p) if p.exists() else name


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on port {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


def wait_path(path: Path, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before creating {path}")
        if path.exists():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear within {timeout} s")


@dataclass
class Service:
    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def start(self) -> Service:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.log, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self.proc = subprocess.Popen(
            self.argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
        fh.close()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class CommandFailed(RuntimeError):
    def __init__(self, step: str, argv: list[str], code: int, output: str) -> None:
        self.step = step
        self.code = code
        self.output = output
        super().__init__(f"{step}: `{' '.join(argv)}` exited {code}\n{output.strip()[-2000:]}")


def run(step: str, argv: list[str], *, timeout: float = 120.0, env: dict[str, str] | None = None) -> str:
    """Run one command to completion; raise :class:`CommandFailed` naming the step on a non-zero exit."""
    full_env = dict(os.environ, **(env or {}))
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise CommandFailed(step, argv, res.returncode, res.stdout + res.stderr)
    return res.stdout
