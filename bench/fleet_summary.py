"""The fleet at a glance with a large registry (SQLite): how long ``GET /v1/fleet`` (``Store.fleet_counts``: index
range counts, migration 0004) and a label-filtered page of ``GET /v1/eUICCs`` take, and what the contact index
costs the once-a-second ``last_contact`` batch of the poll path.

The registry is bulk-inserted (``bench.eim.bulk_register``) and given a realistic spread of contacts: a third
seen within the hour, a third within the day, a third silent for days, 1 % with their own poll interval, 5 % never
seen; 10 % carry the label ``site=berlin``; 20,000 operations. Each figure is the median of ``runs`` calls on a
warm database (the first call is dropped). The contact batch: 20,000 ``last_contact`` values written in one
statement (``eim.store.sqlite``'s flush), with the migration's ``euiccs_contact`` index and, for comparison, on a
copy without it.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Section
from bench.eim import bulk_register, eids_for


def _spread(path: str, n: int, now: float) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    rnd = random.Random(32)
    rows = []
    for i in range(n):
        r = rnd.random()
        if r < 0.05:
            contact = None
        elif r < 0.37:
            contact = now - rnd.uniform(0, 3600)
        elif r < 0.69:
            contact = now - rnd.uniform(3600, 86400)
        else:
            contact = now - rnd.uniform(86400, 30 * 86400)
        interval = 600.0 if rnd.random() < 0.01 else None
        labels = '{"site":"berlin"}' if i % 10 == 0 else '{"site":"paris"}'
        rows.append((contact, interval, labels, "http" if i % 3 else "mqtt", i + 1))
    conn.executemany(
        "UPDATE euiccs SET last_contact = ?, poll_interval_s = ?, labels = ?, binding = ? WHERE rowid = ?", rows
    )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


async def _operations(url: str, eids: list[str], count: int) -> None:
    from eim.model import Operation, OpKind, OpStatus
    from eim.store import open_store
    from eim.store.logic import new_id

    s = open_store(url)
    await s.open()
    now = time.time()
    ops = [
        Operation(new_id(), eids[i % len(eids)], OpKind.EUICC_DATA, {}, OpStatus.QUEUED, now, now) for i in range(count)
    ]
    for i in range(0, len(ops), 5000):
        await s.add_operations(ops[i : i + 5000], who="bench")
    await s.close()


async def _timings(url: str, runs: int) -> dict[str, Any]:
    from eim.store import open_store

    s = open_store(url)
    await s.open()
    out: dict[str, Any] = {}
    try:

        async def median_ms(call) -> float:
            await call()
            took = []
            for _ in range(runs):
                t = time.perf_counter()
                await call()
                took.append((time.perf_counter() - t) * 1000)
            return statistics.median(took)

        counts = await s.fleet_counts(default_interval_s=86400.0)
        out["counts"] = {
            "registered": counts.registered,
            "seen_1h": counts.seen_1h,
            "seen_24h": counts.seen_24h,
            "stale": counts.stale,
            "never_seen": counts.never_seen,
        }
        out["fleet_ms"] = await median_ms(lambda: s.fleet_counts(default_interval_s=86400.0))
        out["label_page_ms"] = await median_ms(lambda: s.find_euiccs(labels=[("site", "berlin")], limit=100))
        out["ops_by_status_ms"] = await median_ms(s.count_operations_by_status)
    finally:
        await s.close()
    return out


def _plans(path: str) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        plans = {}
        for name, sql, args in (
            ("seen", "SELECT COUNT(*) FROM euiccs WHERE last_contact >= ?", (0.0,)),
            ("stale", "SELECT COUNT(*) FROM euiccs WHERE last_contact < ? AND poll_interval_s IS NULL", (0.0,)),
            (
                "stale_own",
                "SELECT COUNT(*) FROM euiccs WHERE poll_interval_s IS NOT NULL AND last_contact + poll_interval_s < ?",
                (0.0,),
            ),
            ("binding", "SELECT binding, COUNT(*) FROM euiccs GROUP BY binding", ()),
        ):
            rows = conn.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()
            plans[name] = "; ".join(r[-1] for r in rows)
        return plans
    finally:
        conn.close()


def _contact_batch_ms(path: str, eids: list[str], runs: int) -> float:
    """20,000 last_contact values in one statement (the SQLite store's flush), median ms."""
    from eim.store.sqlite import _record_contacts_json

    conn = sqlite3.connect(path, isolation_level=None)
    rnd = random.Random(7)
    took = []
    try:
        for run in range(runs + 1):
            now = time.time() + run
            batch = [(e, now) for e in rnd.sample(eids, min(20_000, len(eids)))]
            gen = _record_contacts_json(sorted(batch))
            q = next(gen)
            t = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(q.sql, q.args)
            conn.execute("COMMIT")
            if run:
                took.append((time.perf_counter() - t) * 1000)
    finally:
        conn.close()
    return statistics.median(took)


def run(quick: bool = False, size: int | None = None) -> Section:
    n = size or (5_000 if quick else 1_000_000)
    runs = 3 if quick else 15
    sec = Section("fleet_summary", "2b. Fleet summary (GET /v1/fleet) and label filters at scale")
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        path = str(Path(tmp) / "eim.db")
        url = f"sqlite:///{path}"
        eids = eids_for(n)
        now = time.time()
        insert_s = asyncio.run(bulk_register(url, eids, binding="http", last_contact=now))
        _spread(path, n, now)
        n_ops = min(20_000, n)
        asyncio.run(_operations(url, eids, n_ops))
        t = asyncio.run(_timings(url, runs))
        plans = _plans(path)
        with_index = _contact_batch_ms(path, eids, runs)
        bare = str(Path(tmp) / "bare.db")
        shutil.copy(path, bare)
        conn = sqlite3.connect(bare, isolation_level=None)
        conn.execute("DROP INDEX euiccs_contact")
        conn.close()
        without_index = _contact_batch_ms(bare, eids, runs)
    sec.figures = {
        "euiccs": n,
        "operations": n_ops,
        "insert_s": insert_s,
        **{k: v for k, v in t.items() if k != "counts"},
        "counts": t["counts"],
        "contact_batch_ms": with_index,
        "contact_batch_no_index_ms": without_index,
        "plans": plans,
    }
    sec.add(
        f"SQLite, {n:,} registered eUICCs (a third seen within the hour, a third within the day, a third silent "
        "for days, 5 % never seen, 1 % with their own poll interval, 10 % labelled site=berlin), "
        f"{n_ops:,} queued operations; median of {runs} calls on a warm database, in the store (no HTTP)."
    )
    sec.add("")
    sec.table(
        ["what", "ms"],
        [
            ["GET /v1/fleet (Store.fleet_counts: 8 counts)", t["fleet_ms"]],
            ["GET /v1/euiccs?label=site=berlin&limit=100 (first page)", t["label_page_ms"]],
            ["operations by kind and status (the /metrics gauge)", t["ops_by_status_ms"]],
            [f"{min(20_000, n):,} last_contact values in one statement, with the contact index", with_index],
            ["the same without the contact index (before migration 0004)", without_index],
        ],
    )
    sec.add("Counts: " + json.dumps(t["counts"]) + ". Query plans (SQLite's EXPLAIN QUERY PLAN):")
    sec.add("")
    for name, plan in plans.items():
        sec.add(f"- {name}: `{plan}`")
    return sec
