"""Benchmark 5: the IPA daemon's footprint - RSS and import time of ``ipa run``, CPU seconds per poll.

``ipa run`` runs as on a gateway: its own process, talking AT to a modem (the virtual modem on a real pty, the
software eUICC as the SIM) and ESipa over HTTP to an eIM worker (:mod:`bench.eim_server`) through a counting
proxy that counts its polls. Poll interval 0.2 s, no jitter, nothing queued (the steady state of a device)."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import PY, REPO, Section, cpu_seconds, fmt, peak_rss_mb, rss_mb, versus


def import_time(module: str = "ipa.cli", runs: int = 5) -> tuple[float, float]:
    """(median seconds to start Python and import ``module``, median seconds for a bare ``python -c pass``)."""

    def timed(code: str) -> float:
        t = time.perf_counter()
        subprocess.run([PY, "-c", code], check=True, cwd=REPO)
        return time.perf_counter() - t

    bare = statistics.median(timed("pass") for _ in range(runs))
    full = statistics.median(timed(f"import {module}") for _ in range(runs))
    return full, bare


def run(quick: bool = False, *, window: float | None = None) -> Section:
    from bench.eim import Fleet, eids_for, eim_workers
    from bench.proxy import CountingProxy
    from euicc.card import SoftEuicc
    from firmware_bridge.virtual_modem import VirtualModem
    from rsp.pki import create_lab_pki

    sec = Section("ipa", "5. IPA footprint")
    window = window or (5.0 if quick else 15.0)
    figures: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-ipa-") as tmpd:
        tmp = Path(tmpd)
        pki = create_lab_pki(tmp / "pki", curves=("nist",), eids=eids_for(1))
        url = f"sqlite:///{tmp}/eim.db"
        (tmp / "cards").mkdir()
        fleet = Fleet(url, pki.root, tmp / "cards")
        asyncio.run(fleet.associate(eids_for(1)))
        card = SoftEuicc.load(fleet.cards[0][1])
        with (
            eim_workers("http", url, pki.root) as w,
            CountingProxy(w["ports"][0]) as proxy,
            VirtualModem(card, baud=115200) as vm,
        ):
            cfg = tmp / "ipa.toml"
            cfg.write_text(
                f'[device]\nport = "{vm.path}"\n'
                f'[eim]\nbinding = "http"\nurl = "http://127.0.0.1:{proxy.port}"\n'
                "[poll]\ninterval = 0.2\nmin_interval = 0.2\njitter = 0.0\n"
            )
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            t0 = time.perf_counter()
            errlog = tmp / "ipa.stderr"
            p = subprocess.Popen(
                [
                    PY,
                    "-X",
                    "importtime",
                    "-m",
                    "ipa.cli",
                    "--config",
                    str(cfg),
                    "--state",
                    str(tmp / "ipa.state"),
                    "run",
                ],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=errlog.open("wb"),
            )
            try:
                # wait for the first poll
                deadline = time.monotonic() + 30
                while proxy.counts.http_requests == 0 and time.monotonic() < deadline and p.poll() is None:
                    time.sleep(0.02)
                first_poll = time.perf_counter() - t0
                if proxy.counts.http_requests == 0:
                    said = errlog.read_text()[-2000:] if p.poll() is not None else ""
                    raise RuntimeError(f"ipa run never polled: {said}")
                time.sleep(1.0)
                c0, n0 = cpu_seconds(p.pid), proxy.counts.http_requests
                time.sleep(window)
                c1, n1 = cpu_seconds(p.pid), proxy.counts.http_requests
                rss, hwm = rss_mb(p.pid), peak_rss_mb(p.pid)
                uss = _uss_mb(p.pid)
            finally:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            run_imports_s, run_modules = _importtime(errlog.read_text())
            packages = _top_packages(errlog.read_text())
    polls = n1 - n0
    cpu_per_poll = (c1 - c0) / max(1, polls)
    imp, bare = import_time(runs=3 if quick else 7)
    figures.update({"run_imports_s": run_imports_s, "run_modules": run_modules, "packages": packages})
    figures.update(
        {
            "rss_mb": rss,
            "peak_rss_mb": hwm,
            "uss_mb": uss,
            "polls": polls,
            "cpu_per_poll_s": cpu_per_poll,
            "import_s": imp,
            "python_bare_s": bare,
            "first_poll_s": first_poll,
            "window_s": window,
        }
    )
    sec.figures = figures
    sec.add(
        f"`ipa run` (own process, `python -m ipa.cli`), AT to the virtual modem at 115200 baud, HTTP to an eIM "
        f"worker, poll interval 0.2 s, nothing queued; measured over {window:.0f} s after the first poll."
    )
    sec.add("")
    sec.table(
        ["figure", "value", "bar"],
        [
            ["RSS (VmRSS) MB", rss, versus(rss, 40, higher_is_better=False)],
            ["peak RSS (VmHWM) MB", hwm, versus(hwm, 40, higher_is_better=False)],
            ["USS (private) MB", uss, "-"],
            [
                "import time of everything `ipa run` imports (`-X importtime`, top-level cumulative) s",
                run_imports_s,
                "-",
            ],
            ["modules imported by `ipa run`", run_modules, "-"],
            ["start + import of `ipa.cli` alone (the command line; the rest is imported lazily) s", imp, "-"],
            ["bare `python -c pass` s", bare, "-"],
            ["start to first poll s", first_poll, "-"],
            ["polls in the window", polls, "-"],
            ["CPU per poll ms (GetEimPackage over HTTP + ES10 work)", cpu_per_poll * 1000, "-"],
        ],
    )
    sec.add(f"- Bar, RSS of `ipa run`: {fmt(hwm)} MB peak → {versus(hwm, 40, higher_is_better=False)}")
    sec.add(
        f"- Bar, RSS of `ipa run` with the HTTP binding (issue 18): {fmt(hwm)} MB → "
        f"{versus(hwm, 25, higher_is_better=False)}"
    )
    sec.add(
        "- Third-party packages `ipa run` imported (modules each): "
        + ", ".join(f"{name} {n}" for name, n in packages[:15])
    )
    sec.add(f"- At one poll a minute (the default interval) that is {fmt(cpu_per_poll * 1440 * 1000)} ms of CPU a day.")
    return sec


def _importtime(text: str) -> tuple[float, int]:
    """Sum of the cumulative times of the top-level imports in ``-X importtime`` output, and the module count."""
    entries = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|", 2)
        entries.append((len(name) - len(name.lstrip(" ")), int(cumulative)))
    if not entries:
        return 0.0, 0
    top = min(indent for indent, _ in entries)  # deeper imports are indented further
    return sum(c for indent, c in entries if indent == top) / 1e6, len(entries)


def _top_packages(text: str) -> list[tuple[str, int]]:
    """Top-level packages outside the standard library and this project in ``-X importtime`` output, with their
    module counts, most modules first."""
    import sys

    own = {"ipa", "rsp", "firmware_bridge", "euicc", "eim", "smdpp", "bench"}
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        top = line.rsplit("|", 1)[1].strip().split(".")[0]
        if top in sys.stdlib_module_names or top in own or top.startswith("_"):
            continue
        counts[top] = counts.get(top, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])


def _uss_mb(pid: int) -> float:
    total = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    except OSError:
        return 0.0
    return total / 1024
