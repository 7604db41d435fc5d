"""Shared helpers of the benchmark suite: percentiles, process RSS/CPU, the machine description, report tables."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; 0.0 for an empty list."""
    if not values:
        return 0.0
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


def rss_mb(pid: int | None = None) -> float:
    """Resident set size of ``pid`` (default: this process) in MiB, from /proc."""
    return _status_kb(pid, "VmRSS") / 1024


def peak_rss_mb(pid: int | None = None) -> float:
    return _status_kb(pid, "VmHWM") / 1024


def _status_kb(pid: int | None, key: str) -> int:
    path = f"/proc/{pid or 'self'}/status"
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds consumed by ``pid`` (default: this process)."""
    fields = Path(f"/proc/{pid or 'self'}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class CpuAccount:
    """Where the machine's CPU went over a window: every process's user+system time from ``/proc/<pid>/stat``
    (processes started inside the window count from zero), grouped by role, and the kernel's own time (softirq:
    loopback TCP/UDP) and idle time from ``/proc/stat``. Roles: the pids given by name (load generator, workers),
    then by command line: PostgreSQL, Mosquitto, and *other* (everything else on the machine: other users' work)."""

    def __init__(self, named: dict[int, str] | None = None) -> None:
        self.named = dict(named or {})
        self._start: tuple[float, dict[int, tuple[str, int]], list[int]] | None = None
        self.result: dict[str, float] = {}

    @staticmethod
    def _snapshot() -> tuple[float, dict[int, tuple[str, int]], list[int]]:
        procs: dict[int, tuple[str, int]] = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
                cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            f = stat.rsplit(")", 1)[1].split()
            procs[int(d)] = (cmd, int(f[11]) + int(f[12]))
        with open("/proc/stat") as fh:
            cpu = [int(x) for x in fh.readline().split()[1:9]]
        return time.perf_counter(), procs, cpu

    def start(self) -> None:
        self._start = self._snapshot()

    def stop(self) -> dict[str, float]:
        """Cores used per role over the window (1.0 = one core busy all the time)."""
        if self._start is None:
            return {}
        (t0, p0, c0), (t1, p1, c1) = self._start, self._snapshot()
        wall = max(1e-9, t1 - t0)
        tck = os.sysconf("SC_CLK_TCK")
        # a named process is always reported, at 0.0 when it used less than a clock tick (short windows)
        out: dict[str, float] = {name: 0.0 for pid, name in self.named.items() if pid in p1}
        for pid, (cmd, ticks) in p1.items():
            used = (ticks - (p0[pid][1] if pid in p0 else 0)) / tck
            if used <= 0:
                continue
            role = self.named.get(pid) or _role(cmd)
            out[role] = out.get(role, 0.0) + used / wall
        d = [b - a for a, b in zip(c0, c1, strict=True)]  # user nice system idle iowait irq softirq steal
        out["kernel softirq"] = (d[5] + d[6]) / tck / wall
        out["idle"] = (d[3] + d[4]) / tck / wall
        out["busy"] = (sum(d) - d[3] - d[4]) / tck / wall
        # cores the hypervisor gave to other guests while this one had work (a VM's "steal"): counted in busy,
        # used by no process here; when it is high, every figure of the window is low
        out["steal"] = d[7] / tck / wall
        self.result = out
        return out


def _role(cmd: str) -> str:
    if cmd.startswith("postgres") or "/postgres " in cmd:
        return "postgresql"
    if "mosquitto" in cmd:
        return "mosquitto"
    return "other"


def machine() -> dict[str, str]:
    """nproc, CPU model, memory, kernel and Python version of this machine."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit or "unknown",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load": load(),
    }


def load() -> str:
    """The 1/5/15-minute load averages (other work on the machine skews every figure)."""
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


@dataclass
class Section:
    """One benchmark's part of the report: Markdown text plus machine-readable figures."""

    name: str
    title: str
    lines: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def add(self, text: str = "") -> None:
        self.lines.append(text)

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "---|" * len(header))
        for r in rows:
            self.lines.append("| " + " | ".join(fmt(c) for c in r) + " |")
        self.lines.append("")

    def markdown(self) -> str:
        return f"## {self.title}\n\n" + "\n".join(self.lines).rstrip() + "\n"


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.01 else f"{value:.2g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def versus(value: float, bar: float, *, higher_is_better: bool = True) -> str:
    """``"0.62x bar 500 - MISSED"`` style verdict: the figure's ratio to its bar."""
    ratio = value / bar if bar else 0.0
    ok = ratio >= 1.0 if higher_is_better else ratio <= 1.0
    return f"{ratio:.2f}× bar ({fmt(bar)}) {'met' if ok else '**missed**'}"


def stop_process(p: subprocess.Popen, wait: float = 15, kill_wait: float = 5) -> None:
    """Terminate ``p`` (if it still runs) and wait ``wait`` seconds for it; then kill it and wait ``kill_wait``."""
    if p.poll() is None:
        p.terminate()
    try:
        p.wait(wait)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(kill_wait)


@contextlib.contextmanager
def eim_serve(
    cfg: Path,
    log: Path,
    tree: Path | None = None,
    *,
    prefix: Sequence[str] = (),
    wait: float = 15,
    kill_wait: float = 5,
) -> Iterator[subprocess.Popen]:
    """``eim serve`` with the configuration file ``cfg``, of this tree or of ``tree`` (a checkout of another commit,
    first on PYTHONPATH), run under ``prefix`` (``taskset``, ``valgrind``, ...), its stderr in ``log``; stopped
    with :func:`stop_process` (``wait`` seconds to exit, ``kill_wait`` after a kill) when the block ends."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    with open(log, "wb") as err:
        p = subprocess.Popen(
            [*prefix, PY, "-m", "eim.cli", "--config", str(cfg), "serve"],
            cwd=tree or REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
        try:
            yield p
        finally:
            stop_process(p, wait, kill_wait)


def wait_healthz(port: int, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    """Until the ``eim serve`` process ``proc`` answers ``GET /healthz`` on ``port`` with 200; RuntimeError with the
    end of its ``log`` if it exits or ``timeout`` seconds pass."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"eim serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"eim serve did not start: {log.read_text()[-2000:]}")
