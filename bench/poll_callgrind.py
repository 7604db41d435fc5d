"""Instructions per no-work poll of ``eim serve`` (HTTP + SQLite) under callgrind, contenders interleaved.

The no-work poll of section 0 (GetEimPackage for a registered eUICC with an empty queue) costs ~50-90 µs of CPU
on this machine kind, and the machine's speed moves by more than the changes worth measuring: rounds of the same
tree differ by ±20 %. Instruction counts of the server process do not move with it (:mod:`bench.psmo_callgrind`
does the same for the signed PSMO round trip). Each contender's ``eim serve`` runs under ``valgrind
--tool=callgrind`` with instrumentation off while it starts and warms up, on for ``duration`` seconds of polls from
:mod:`bench.eim_load` (``poll`` mode, 64 clients, outside valgrind), off after; the count is divided by the polls
answered meanwhile. System calls and the kernel's work are not counted: compare contenders with each other, and
take the CPU time of :mod:`bench.ceiling` for the whole. Needs ``valgrind``.

    python -m bench.poll_callgrind --commits .,HEAD~1 [--rounds 3] [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import PY, REPO
from bench.eim import bulk_register, eids_for, free_port, reset_contacts
from bench.psmo import _copy_store, _tree
from bench.psmo_callgrind import _instructions, instrument, interleaved, print_table, under_callgrind, write_config


def _polls(port: int, eids: list[str], duration: float, concurrency: int, warmup: float = 0.0) -> dict[str, Any]:
    """The load's result; ``warmup``: seconds of polls before the counted ones (0: every poll is counted)."""
    cfg = {
        "binding": "http",
        "ports": [port],
        "mode": "poll",
        "eids": eids,
        "concurrency": concurrency,
        "duration": duration,
        "warmup": warmup,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cfg, f)
    try:
        out = subprocess.run([PY, "-m", "bench.eim_load", f.name], capture_output=True, text=True, cwd=REPO)
    finally:
        os.unlink(f.name)
    lines = out.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"load failed: {out.stderr[-500:]}")
    return json.loads(lines[-1])


def run(commits: list[str], *, rounds: int, duration: float, n: int = 2_000, concurrency: int = 64) -> dict:
    from rsp.pki import create_lab_pki

    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    per: dict[str, list[float]] = {c: [] for c in commits}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-poll-cg-")))
        trees = {c: (None if c == "." else stack.enter_context(_tree(c))) for c in commits}
        pki = create_lab_pki(tmp / "pki", curves=("nist",), eids=eids_for(1))
        base = tmp / "base.db"
        eids = eids_for(n, start=1_000_001)
        asyncio.run(bulk_register(f"sqlite:///{base}", eids))
        for r, c in interleaved(commits, rounds):
            d = tmp / f"round{r}-{len(per[c])}-{c.replace('/', '_').replace('.', 'tree')}"
            d.mkdir()
            _copy_store(base, d / "eim.db")
            reset_contacts(f"sqlite:///{d / 'eim.db'}", "http", time.time() - 3600)
            port = free_port()
            write_config(d, pki.root, port)
            with under_callgrind(d, trees[c], port) as (p, out):
                _polls(port, eids, 3.0, concurrency, warmup=0.5)  # warm-up, not counted
                instrument(p.pid, True)
                res = _polls(port, eids, duration, concurrency)
                instrument(p.pid, False)
            ir = _instructions(out)
            polls = int(res.get("count") or 0)
            per[c].append(ir / max(polls, 1))
            print(
                f"  round {r + 1} {c}: {polls} polls, {ir / 1e6:,.0f} M instructions, "
                f"{ir / max(polls, 1) / 1e3:,.1f} k per poll, load errors {res.get('errors')}",
                flush=True,
            )
    return per


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.poll_callgrind")
    ap.add_argument("--commits", required=True, help="contenders, comma-separated ('.' = this working tree)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    args = ap.parse_args()
    commits = args.commits.split(",")
    per = run(commits, rounds=args.rounds, duration=args.duration)
    print_table(per, commits, "no-work poll", digits=1)


if __name__ == "__main__":
    main()
