"""Benchmark: signed PSMO round trips over HTTP + SQLite against the 1,200/s bar (issue 18), before/after interleaved.

A round trip: GetEimPackage (claim, counter value durably recorded, eIM signature) -> ES10b.LoadEuiccPackage on a
software eUICC (in the load process) -> ProvideEimPackageResult (the eUICC's signature verified, the result durably
recorded) -> acknowledgement checked -> the acknowledged result removed from the card (ES10b.RemoveNotificationFromList,
as an IPA does; without it the card's list grew and the load's CPU per round trip with it). The eIM is the real
``eim --config FILE serve`` (SQLite file, WAL, ``synchronous = FULL``: one fsync per COMMIT); the load is
:mod:`bench.eim_load` (64 simulated IPAs, 100 cards).

``before="COMMIT[,COMMIT...]"`` adds the ``eim serve`` of older commits (``git archive``, run with this venv) as
more contenders. Every contender gets its own copy of the same store (the same cards, associations and queued
PSMOs) and of the cards' state; the contenders run one after the other in each round, in an order that rotates,
so each optimisation gets its before/after pair from one interleaved run. Each round also measures the disk's raw
``write + fsync`` rate in the store's directory (a small file rewritten and fsynced in a loop), so a slow disk
shows up next to the figures it slowed.

    python -m bench.psmo [--quick] [--before HEAD~1] [--rounds 5] [--duration 3]
    python -m bench --only psmo --before HEAD~1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import Section, eim_serve, fmt, versus
from bench.eim import EIM_ID, Fleet, eids_for, free_port, reset_contacts, run_load

BAR = 1200.0  # signed PSMO round trips/s over HTTP + SQLite (issue 18)


def fsync_rate(directory: Path, seconds: float = 0.5) -> dict[str, float]:
    """The disk's raw rate: a 4 KiB ``pwrite`` + ``fsync`` of one small file in ``directory``, in a loop."""
    path = directory / "fsync-probe.dat"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    lat: list[float] = []
    try:
        block = b"\0" * 4096
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            os.pwrite(fd, block, (len(lat) % 16) * 4096)
            os.fsync(fd)
            lat.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    lat.sort()
    return {"rate": len(lat) / elapsed, "median_ms": lat[len(lat) // 2] * 1e3}


@contextlib.contextmanager
def _tree(commit: str) -> Iterator[Path]:
    from bench.ceiling import _tree as tree

    with tree(commit) as path:
        yield path


@contextlib.contextmanager
def _eim(url: str, pki: Path, tree: Path | None, tmp: Path) -> Iterator[dict[str, Any]]:
    """One ``eim serve`` (of this tree, or of ``tree``) on HTTP; yields {"port", "pid"}."""
    from bench.eim import _wait_serving

    port = free_port()
    cfg = tmp / "eim.toml"
    cfg.write_text(
        f'[eim]\neim_id = "{EIM_ID}"\ndata_dir = "{tmp / "data"}"\nlab_pki = "{pki}"\ncurve = "nist"\n'
        f'[store]\nurl = "{url}"\n[http]\nport = {port}\n'
        f"[coap]\nenabled = false\nport = {free_port(socket.SOCK_DGRAM)}\n[mqtt]\nenabled = false\n"
        f'[relay]\nenabled = false\n[log]\nlevel = "WARNING"\n'
    )
    with eim_serve(cfg, tmp / "eim-0.log", tree) as p:
        asyncio.run(_wait_serving("http", [port], [p], tmp))
        yield {"port": port, "pid": p.pid}


def _copy_store(src: Path, dst: Path) -> None:
    conn = sqlite3.connect(src)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    shutil.copyfile(src, dst)


def run(
    quick: bool = False,
    *,
    before: str | None = None,
    rounds: int | None = None,
    duration: float | None = None,
    cards: int = 100,
    concurrency: int = 64,
) -> Section:
    from rsp.pki import create_lab_pki

    # 10 rounds: on this machine kind two 5-round runs of the same code gave medians 0.95x and 1.10x apart
    rounds = rounds or (2 if quick else 10)
    duration = duration or (1.5 if quick else 3.0)
    sec = Section("psmo", "1c. Signed PSMO round trips over HTTP + SQLite (issue 18 bar: 1,200/s)")
    commits = before.split(",") if before else []
    names = ["eIM", *(f"eIM {c}" for c in commits)]
    per: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    disk: list[dict[str, float]] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-psmo-")))
        trees: dict[str, Path | None] = {"eIM": None}
        for c in commits:
            trees[f"eIM {c}"] = stack.enter_context(_tree(c))
        pki = create_lab_pki(tmp / "pki", curves=("nist",), eids=eids_for(1))
        base = tmp / "base.db"
        fleet = Fleet(f"sqlite:///{base}", pki.root, tmp / "cards-base")
        fleet.cards_dir.mkdir()
        asyncio.run(fleet.associate(eids_for(cards, start=1)))
        # enough queued work for every round at up to 2,000 round trips/s (a card whose queue runs dry drops out)
        per_card = max(10, int(rounds * duration * 2000 / cards) + 1)
        queued, queue_s = asyncio.run(fleet.queue(per_card))
        reset_contacts(f"sqlite:///{base}", "http", time.time() - 3600)
        servers: dict[str, dict[str, Any]] = {}
        cards_of: dict[str, list[tuple[str, str]]] = {}
        for i, name in enumerate(names):
            d = tmp / f"contender-{i}"
            d.mkdir()
            _copy_store(base, d / "eim.db")
            shutil.copytree(fleet.cards_dir, d / "cards")
            cards_of[name] = [(eid, str(d / "cards" / Path(path).name)) for eid, path in fleet.cards]
            servers[name] = stack.enter_context(_eim(f"sqlite:///{d / 'eim.db'}", pki.root, trees[name], d))
        for r in range(rounds):
            disk.append(fsync_rate(tmp))
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                s = servers[name]
                cfg = {
                    "binding": "http",
                    "ports": [s["port"]],
                    "mode": "psmo",
                    "cards": cards_of[name],
                    "concurrency": min(concurrency, cards),
                    "duration": duration,
                }
                res = run_load(cfg, [s["pid"]])
                cpu = res["cpu"]
                n = max(1, res["count"])
                res["server_us_rt"] = cpu.get("eIM worker 1", 0.0) * res["elapsed"] / n * 1e6
                res["load_us_rt"] = cpu.get("load generator", 0.0) * res["elapsed"] / n * 1e6
                res["kernel_us_rt"] = cpu.get("kernel softirq", 0.0) * res["elapsed"] / n * 1e6
                res["other_cores"] = cpu.get("other", 0.0)
                res["idle_cores"] = cpu.get("idle", 0.0)
                res["steal_cores"] = cpu.get("steal", 0.0)
                res["eim_cores"] = cpu.get("eIM worker 1", 0.0)
                per[name].append(res)
                print(
                    f"  psmo round {r + 1} {name}: {res['rate']:.0f} rt/s p99 {res['p99_ms']:.0f} ms, eIM "
                    f"{res['server_us_rt']:.0f} µs/rt, load {res['load_us_rt']:.0f} µs/rt, other work "
                    f"{res['other_cores']:.2f} cores, idle {res['idle_cores']:.2f}, steal {res['steal_cores']:.2f}, "
                    "disk "
                    f"{disk[-1]['rate']:.0f} fsync/s, errors {res['errors']} "
                    f"{res['first_error']}",
                    flush=True,
                )
    _report(sec, per, disk, rounds=rounds, duration=duration, cards=cards, concurrency=concurrency, queued=queued)
    sec.figures = {"per": per, "disk": disk, "queue_s": queue_s}
    return sec


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def _spread(xs: list[float]) -> str:
    return f"{fmt(min(xs))}-{fmt(max(xs))}" if xs else "-"


def _report(
    sec: Section,
    per: dict[str, list[dict[str, Any]]],
    disk: list[dict[str, float]],
    *,
    rounds: int,
    duration: float,
    cards: int,
    concurrency: int,
    queued: int,
) -> None:
    sec.add(
        f"`eim serve` on a SQLite file (WAL, `synchronous = FULL`), HTTP; {min(concurrency, cards)} simulated IPAs "
        f"working through {cards} software eUICCs ({queued:,} signed getRAT PSMOs queued through the operator "
        "path). A round trip = GetEimPackage (claim: the counter value and the signed package committed before the "
        "answer) -> ES10b.LoadEuiccPackage on the card (in the load process) -> ProvideEimPackageResult (the "
        "eUICC's signature verified, the result committed before the acknowledgement) -> acknowledgement checked -> "
        "the acknowledged result removed from the card (RemoveNotificationFromList, in the load process, as an IPA "
        "does). "
        f"{rounds} rounds of {duration:.1f} s; in each round every contender runs once, in a rotating order, on its "
        "own copy of the same store and cards. *eIM / load µs per rt*: the CPU of the eIM process and of the load "
        "process (the cards' work is there) per round trip; *eIM cores*: the eIM process's CPU over the measured "
        "window; *other*: cores used meanwhile by everything else on the machine (other users' work); *idle*: the "
        "machine's idle cores (none idle and the eIM under one core: the eIM was short of CPU, not waiting for the "
        "disk). *steal*: cores the hypervisor gave to other virtual machines while this one had work (from "
        "`/proc/stat`; no process here used them, and every figure of a round with steal is low). *disk*: the raw "
        "rate of a 4 KiB write + fsync in a loop, measured in the same directory at the start of each round."
    )
    sec.add("")
    rows = []
    for name, rs in per.items():
        rates = [r["rate"] for r in rs]
        rows.append(
            [
                name,
                _med(rates),
                _spread(rates),
                _med([r["p99_ms"] for r in rs]),
                _med([r["server_us_rt"] for r in rs]),
                _med([r["load_us_rt"] for r in rs]),
                _med([r["eim_cores"] for r in rs]),
                _med([r["other_cores"] for r in rs]),
                _med([r["idle_cores"] for r in rs]),
                _med([r.get("steal_cores", 0.0) for r in rs]),
                sum(r["errors"] for r in rs),
            ]
        )
    sec.table(
        [
            "eIM",
            "round trips/s (median)",
            "lowest-highest",
            "p99 ms",
            "eIM µs per rt",
            "load µs per rt",
            "eIM cores",
            "other work, cores",
            "idle cores",
            "steal, cores",
            "errors",
        ],
        rows,
    )
    rates = [d["rate"] for d in disk]
    sec.add(
        f"- Disk, raw write + fsync: {fmt(_med(rates))}/s (median of {len(disk)}, {_spread(rates)}), median latency "
        f"{fmt(_med([d['median_ms'] for d in disk]))} ms."
    )
    names = list(per)
    for i in range(1, len(names)):
        new, old = names[i - 1], names[i]
        ratio = [a["rate"] / b["rate"] for a, b in zip(per[new], per[old], strict=True) if b["rate"]]
        cpu = [
            b["server_us_rt"] / a["server_us_rt"] for a, b in zip(per[new], per[old], strict=True) if a["server_us_rt"]
        ]
        sec.add(
            f"- before/after: {new} vs {old}: rate {_med(ratio):.2f}× ({_spread(ratio)}), eIM CPU per round trip "
            f"{_med(cpu):.2f}× less ({_spread(cpu)})"
        )
    me = per["eIM"]
    eim_us = _med([r["server_us_rt"] for r in me])
    load_us = _med([r["load_us_rt"] for r in me])
    kern_us = _med([r["kernel_us_rt"] for r in me])
    if eim_us:
        one_core = 1e6 / eim_us
        machine = 2e6 / (eim_us + load_us + kern_us) if eim_us + load_us + kern_us else 0.0
        sec.add(
            f"- What the CPU allows (eIM): one eIM process uses at most one core (the GIL): 1 core / {fmt(eim_us)} µs "
            f"= {fmt(one_core)} round trips/s; with the load's {fmt(load_us)} µs and the kernel's {fmt(kern_us)} µs "
            f"per round trip on the same 2 cores and nothing else running: {fmt(min(one_core, machine))}/s."
        )
    sec.add(
        f"- Bar, signed PSMO round trips over HTTP + SQLite (issue 18): {fmt(_med([r['rate'] for r in me]))}/s → "
        f"{versus(_med([r['rate'] for r in me]), BAR)}"
    )


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.psmo")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--before", default="", help="COMMIT[,COMMIT...]: their eIM as more contenders")
    p.add_argument("--rounds", type=int)
    p.add_argument("--duration", type=float)
    args = p.parse_args()
    sec = run(args.quick, before=args.before or None, rounds=args.rounds, duration=args.duration)
    print(sec.markdown())


if __name__ == "__main__":
    main()
