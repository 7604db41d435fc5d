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

import asyncio
import time
from typing import Any

from bench.eim import bulk_register, eids_for, free_port, reset_contacts
from bench.psmo import _copy_store
from bench.psmo_callgrind import (
    _instructions,
    cli,
    instrument,
    interleaved,
    load_run,
    record,
    under_callgrind,
    workspace,
    write_config,
)


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
    return load_run(cfg)


def run(commits: list[str], *, rounds: int, duration: float, n: int = 2_000, concurrency: int = 64) -> dict:
    per: dict[str, list[float]] = {c: [] for c in commits}
    with workspace(commits, "bench-poll-cg-") as (tmp, trees, pki_root):
        base = tmp / "base.db"
        eids = eids_for(n, start=1_000_001)
        asyncio.run(bulk_register(f"sqlite:///{base}", eids))
        for r, c in interleaved(commits, rounds):
            d = tmp / f"round{r}-{len(per[c])}-{c.replace('/', '_').replace('.', 'tree')}"
            d.mkdir()
            _copy_store(base, d / "eim.db")
            reset_contacts(f"sqlite:///{d / 'eim.db'}", "http", time.time() - 3600)
            port = free_port()
            write_config(d, pki_root, port)
            with under_callgrind(d, trees[c], port) as (p, out):
                _polls(port, eids, 3.0, concurrency, warmup=0.5)  # warm-up, not counted
                instrument(p.pid, True)
                res = _polls(port, eids, duration, concurrency)
                instrument(p.pid, False)
            record(per, r, c, _instructions(out), int(res.get("count") or 0), "poll", res.get("errors"), 1)
    return per


def main() -> None:
    cli("python -m bench.poll_callgrind", run, 10.0, "no-work poll", digits=1)


if __name__ == "__main__":
    main()
