"""Instructions per signed PSMO round trip of ``eim serve`` (HTTP + SQLite) under callgrind, contenders interleaved.

On a machine shared with other work the CPU time per round trip of :mod:`bench.psmo` moves by ±15 % between rounds
of the same tree (cache and core sharing, GIL hand-offs delayed by preemption), which hides changes of a few
percent. Instruction counts do not depend on the neighbours: each contender's ``eim serve`` runs under
``valgrind --tool=callgrind`` with instrumentation off while it starts and warms up (``--instr-atstart=no``), is
switched on (``callgrind_control -i on``) for a measured load of ``duration`` seconds and off after it; the count is
divided by the operations that became ``done`` in the store meanwhile (every round trip, its claim, result and
acknowledgement included; the contact batch, the event fan-out and the other periodic tasks of those seconds too).
The load is :mod:`bench.eim_load` in ``psmo`` mode (16 simulated IPAs, 32 software eUICCs, each with 60 signed
getRAT PSMOs queued), outside valgrind. The eIM runs some 50× slower under callgrind, so write groups are
smaller than at full speed and the count includes more COMMIT overhead per round trip than a real run: compare
contenders with each other, not with the µs of :mod:`bench.psmo`. Needs ``valgrind`` (``apt-get install valgrind``).

    python -m bench.psmo_callgrind --commits HEAD~1,HEAD~2 [--rounds 3] [--duration 15]

``--commits``: the contenders (``.`` is this working tree; any other is exported with ``git archive``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import PY, REPO, eim_serve
from bench.eim import EIM_ID, Fleet, eids_for, free_port, reset_contacts
from bench.psmo import _copy_store, _tree


def _done(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM operations WHERE status = 'done'").fetchone()[0])
    finally:
        conn.close()


async def _wait(port: int, proc: subprocess.Popen, limit_s: float = 600.0) -> None:
    from bench.eim_load import HttpClient, get_eim_package_request

    probe = get_eim_package_request("89999000000000000000000000000000")
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("eim serve under valgrind exited during start-up")
        try:
            c = HttpClient("127.0.0.1", port)
            await c.connect()
            await c.request(probe)
            await c.close()
            return
        except OSError:
            await asyncio.sleep(1.0)
    raise RuntimeError("eim serve under valgrind did not start")


def _load(port: int, cards: list[tuple[str, str]], duration: float, concurrency: int) -> dict[str, Any]:
    cfg = {"binding": "http", "ports": [port], "mode": "psmo", "cards": cards, "concurrency": concurrency}
    cfg["duration"] = duration
    return load_run(cfg)


def load_run(cfg: dict[str, Any]) -> dict[str, Any]:
    """:mod:`bench.eim_load` with ``cfg`` in its own process, outside valgrind: its result."""
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


def _instructions(out: Path) -> int:
    total = 0
    for line in out.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            total = max(total, int(line.split()[1]))
    return total


def interleaved(commits: list[str], rounds: int) -> Iterator[tuple[int, str]]:
    """``(round, contender)`` with every contender once per round, the order rotating from round to round."""
    for r in range(rounds):
        yield from ((r, c) for c in commits[r % len(commits) :] + commits[: r % len(commits)])


def write_config(d: Path, pki_root: Path, port: int) -> Path:
    """An ``eim serve`` configuration in ``d``: HTTP on ``port``, SQLite ``d/eim.db``, nothing else on."""
    cfg = d / "eim.toml"
    cfg.write_text(
        f'[eim]\neim_id = "{EIM_ID}"\ndata_dir = "{d / "data"}"\nlab_pki = "{pki_root}"\n'
        f'curve = "nist"\n[store]\nurl = "sqlite:///{d / "eim.db"}"\n[http]\nport = {port}\n'
        f"[coap]\nenabled = false\nport = {free_port(socket.SOCK_DGRAM)}\n[mqtt]\nenabled = false\n"
        f'[relay]\nenabled = false\n[log]\nlevel = "WARNING"\n'
    )
    return cfg


@contextlib.contextmanager
def under_callgrind(d: Path, tree: Path | None, port: int) -> Iterator[tuple[subprocess.Popen, Path]]:
    """``eim serve`` of ``d/eim.toml`` (this tree or ``tree``) under callgrind with instrumentation off, once it
    answers on ``port``: ``(process, its callgrind output file)``; the file is complete once the block ends."""
    out = d / "callgrind.out"
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    with eim_serve(d / "eim.toml", d / "eim.log", tree, prefix=cmd, wait=300, kill_wait=30) as p:
        asyncio.run(_wait(port, p))
        yield p, out


def instrument(pid: int, on: bool) -> None:
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(pid)], check=True, capture_output=True)


def print_table(per: dict[str, list[float]], commits: list[str], unit: str, digits: int = 0) -> None:
    """The median per contender and the ratio of each pair of neighbours, per ``unit``."""
    print(f"\n| eIM | k instructions per {unit} (median) | per round |\n|---|---|---|")
    for c, xs in per.items():
        print(
            f"| {c} | {statistics.median(xs) / 1e3:,.{digits}f} | {' / '.join(f'{x / 1e3:,.{digits}f}' for x in xs)} |"
        )
    for newer, older in itertools.pairwise(commits):
        ratios = [b / a for a, b in zip(per[newer], per[older], strict=True) if a]
        print(
            f"- {newer} vs {older}: {statistics.median(ratios):.3f}× fewer instructions per {unit} "
            f"({min(ratios):.3f}-{max(ratios):.3f}, per round)"
        )


@contextlib.contextmanager
def workspace(commits: list[str], prefix: str) -> Iterator[tuple[Path, dict[str, Path | None], Path]]:
    """A temporary directory, the trees of the contenders (``.``: this one) and a lab PKI: ``(dir, trees, pki)``."""
    from rsp.pki import create_lab_pki

    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
        trees = {c: (None if c == "." else stack.enter_context(_tree(c))) for c in commits}
        yield tmp, trees, create_lab_pki(tmp / "pki", curves=("nist",), eids=eids_for(1)).root


def run(commits: list[str], *, rounds: int, duration: float, cards: int = 32, concurrency: int = 16) -> dict:
    per: dict[str, list[float]] = {c: [] for c in commits}
    with workspace(commits, "bench-psmo-cg-") as (tmp, trees, pki_root):
        base = tmp / "base.db"
        fleet = Fleet(f"sqlite:///{base}", pki_root, tmp / "cards-base")
        fleet.cards_dir.mkdir()
        asyncio.run(fleet.associate(eids_for(cards, start=1)))
        asyncio.run(fleet.queue(60))
        reset_contacts(f"sqlite:///{base}", "http", time.time() - 3600)
        for r, c in interleaved(commits, rounds):
            d = tmp / f"round{r}-{len(per[c])}-{c.replace('/', '_').replace('.', 'tree')}"
            d.mkdir()
            _copy_store(base, d / "eim.db")
            shutil.copytree(fleet.cards_dir, d / "cards")
            mine = [(eid, str(d / "cards" / Path(p).name)) for eid, p in fleet.cards]
            port = free_port()
            write_config(d, pki_root, port)
            with under_callgrind(d, trees[c], port) as (p, out):
                _load(port, mine, 4.0, concurrency)  # warm-up, not counted (caches, first chain checks)
                before = _done(d / "eim.db")
                instrument(p.pid, True)
                res = _load(port, mine, duration, concurrency)
                instrument(p.pid, False)
                n = _done(d / "eim.db") - before
            record(per, r, c, _instructions(out), n, "round trip", res.get("errors"))
    return per


def record(
    per: dict[str, list[float]], r: int, c: str, ir: int, n: int, unit: str, errors: Any, digits: int = 0
) -> None:
    """Add one contender's round: ``ir`` instructions for ``n`` of ``unit``."""
    per[c].append(ir / max(n, 1))
    print(
        f"  round {r + 1} {c}: {n} {unit}s, {ir / 1e6:,.0f} M instructions, "
        f"{ir / max(n, 1) / 1e3:,.{digits}f} k per {unit}, load errors {errors}",
        flush=True,
    )


def cli(prog: str, run_fn: Any, duration: float, unit: str, digits: int = 0) -> None:
    """``--commits``, ``--rounds``, ``--duration``; runs ``run_fn`` and prints the table."""
    ap = argparse.ArgumentParser(prog=prog)
    ap.add_argument("--commits", required=True, help="contenders, comma-separated ('.' = this working tree)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=duration)
    args = ap.parse_args()
    commits = args.commits.split(",")
    per = run_fn(commits, rounds=args.rounds, duration=args.duration)
    print_table(per, commits, unit, digits)


def main() -> None:
    cli("python -m bench.psmo_callgrind", run, 15.0, "round trip")


if __name__ == "__main__":
    main()
