"""The fleet at a glance with a large registry, on SQLite and on PostgreSQL: how long the whole fleet overview takes
(``GET /v1/fleet`` = ``Store.fleet_counts``: the counts of migration 0004 and those of migration 0005 - by SGP.32
version, by the enabled profile's SM-DP+, the failure rate and the 24 hourly buckets of operations and polls), a
label-filtered page of ``GET /v1/eUICCs``, and what the contact index costs the once-a-second ``last_contact`` batch
of the poll path (SQLite).

The registry is bulk-inserted (``bench.eim.bulk_register`` for SQLite, one COPY for PostgreSQL) and given a
realistic spread: a third seen within the hour, a third within the day, a third silent for days, 1 % with their own
poll interval, 5 % never seen; 10 % carry the label ``site=berlin``; 20 % speak SGP.32 v1.0; 90 % have an enabled
profile whose SM-DP+ is known, spread over 12 SM-DP+s (one large, a long tail). Operations: ``ops`` created over
the last 48 hours (10 % of the fleet for 1,000,000), 70 % of them ended (done 85 %, failed 10 %, expired 5 %), the
rest queued; one ``fleet_hourly`` poll counter per hour. Each figure is the median of ``runs`` calls on a warm
database (the first call is dropped), in the store (no HTTP; the JSON of the answer is a few kB). The bar: the
overview page of issue 15 renders in under 200 ms with 1,000,000 registered eUICCs.

PostgreSQL: a private cluster started like the tests' (``demo.services.run_postgres``; skipped with a message when
its binaries are missing), ``VACUUM ANALYZE`` after the load (what autovacuum does on a live system: index-only
scans need the visibility map).

The contact batch (SQLite): 20,000 ``last_contact`` values written in one statement (``eim.store.sqlite``'s flush),
with the migration's ``euiccs_contact`` index and, for comparison, on a copy without it.
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

SMDPS = [f"smdp{k:02d}.example.com" for k in range(12)]
SMDP_WEIGHTS = [40, 15, 10, 8, 6, 5, 4, 3, 3, 2, 2, 2]  # one large SM-DP+, a long tail (sums to 100)


def _profile(rnd: random.Random, i: int) -> tuple[str | None, str | None, str | None]:
    """(sgp32_version, enabled_iccid, enabled_smdp) of the i-th eUICC."""
    version = "1.0" if rnd.random() < 0.2 else None
    if rnd.random() < 0.1:
        return version, None, None
    return version, f"8988{i:015d}F", rnd.choices(SMDPS, SMDP_WEIGHTS)[0]


def _contact(rnd: random.Random, now: float) -> float | None:
    r = rnd.random()
    if r < 0.05:
        return None
    if r < 0.37:
        return now - rnd.uniform(0, 3600)
    if r < 0.69:
        return now - rnd.uniform(3600, 86400)
    return now - rnd.uniform(86400, 30 * 86400)


async def _pg_load(url: str, eids: list[str], now: float) -> float:
    """The same registry as ``bulk_register`` + ``_spread`` in one COPY (PostgreSQL), then VACUUM ANALYZE; seconds."""
    import asyncpg

    from eim.store import open_store

    s = open_store(url)
    await s.open()  # migrations
    await s.close()
    rnd = random.Random(32)
    t = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:

        def rows():
            for i, eid in enumerate(eids):
                contact = _contact(rnd, now)
                interval = 600.0 if rnd.random() < 0.01 else None
                labels = '{"site":"berlin"}' if i % 10 == 0 else '{"site":"paris"}'
                version, iccid, smdp = _profile(rnd, i)
                binding = "http" if i % 3 else "mqtt"  # as _spread
                yield (eid, "eim.bench", 0, "{}", labels, now, binding, contact, interval, version, iccid, smdp)

        await conn.copy_records_to_table(
            "euiccs",
            records=rows(),
            columns=[
                "eid",
                "eim_id",
                "counter_value",
                "info",
                "labels",
                "created_at",
                "binding",
                "last_contact",
                "poll_interval_s",
                "sgp32_version",
                "enabled_iccid",
                "enabled_smdp",
            ],
        )
    finally:
        await conn.close()
    return time.perf_counter() - t


async def _pg_vacuum(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE euiccs")
        await conn.execute("VACUUM ANALYZE operations")
        await conn.execute("VACUUM ANALYZE fleet_hourly")
    finally:
        await conn.close()


def _spread(path: str, n: int, now: float) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    rnd = random.Random(32)
    rows = []
    for i in range(n):
        contact = _contact(rnd, now)
        interval = 600.0 if rnd.random() < 0.01 else None
        labels = '{"site":"berlin"}' if i % 10 == 0 else '{"site":"paris"}'
        version, iccid, smdp = _profile(rnd, i)
        rows.append((contact, interval, labels, "http" if i % 3 else "mqtt", version, iccid, smdp, i + 1))
    conn.executemany(
        "UPDATE euiccs SET last_contact = ?, poll_interval_s = ?, labels = ?, binding = ?, sgp32_version = ?,"
        " enabled_iccid = ?, enabled_smdp = ? WHERE rowid = ?",
        rows,
    )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


async def _operations(url: str, eids: list[str], count: int, now: float) -> float:
    """The fleet tallies rebuilt from the registry loaded around the store (returns the seconds that took), then
    ``count`` operations created over the last 48 h, 70 % ended (done / failed / expired), and the poll counters of
    the last 48 hours (fleet_hourly)."""
    from eim.model import Operation, OpKind, OpStatus
    from eim.store import open_store
    from eim.store.logic import new_id

    rnd = random.Random(15)
    s = open_store(url)
    await s.open()
    t = time.perf_counter()
    await s.recount_fleet_tallies()  # the registry was written around the store
    recount_s = time.perf_counter() - t
    ops = []
    for _ in range(count):
        created = now - rnd.uniform(0, 48 * 3600)
        status, ended = OpStatus.QUEUED, created
        if rnd.random() < 0.7:
            status = rnd.choices([OpStatus.DONE, OpStatus.FAILED, OpStatus.EXPIRED], [85, 10, 5])[0]
            ended = min(now, created + rnd.uniform(1, 3600))
        eid = eids[rnd.randrange(len(eids))]
        ops.append(Operation(new_id(), eid, OpKind.EUICC_DATA, {}, status, created, ended))
    for i in range(0, len(ops), 5000):
        await s.add_operations(ops[i : i + 5000], who="bench")
    hour = int(now // 3600) * 3600
    polls = [("polls", hour - k * 3600, rnd.randrange(300_000, 400_000)) for k in range(48)]
    await s._run(lambda: s.fleet.add_hourly(polls, 0))
    await s.close()
    return recount_s


TALLIES_SQL = "SELECT dim, value, SUM(n) AS n FROM fleet_tallies GROUP BY dim, value HAVING SUM(n) <> 0"


def _contacts(now: float):
    """The contact counts of ``FleetLogic.fleet_counts`` as it runs them with ``[fleet] poll_interval_s`` 86400 (the
    stale count is derived from seen within 24 h and the tallies' registered count)."""
    from eim.store.logic import Q

    for sql, args in (
        ("SELECT COUNT(*) AS n FROM euiccs WHERE last_contact IS NULL", ()),
        ("SELECT COUNT(*) AS n FROM euiccs WHERE last_contact >= ?", (now - 3600.0,)),
        ("SELECT COUNT(*) AS n FROM euiccs WHERE last_contact >= ? AND last_contact < ?", (now - 86400.0, now - 3600)),
        ("SELECT COUNT(*) AS n FROM euiccs WHERE poll_interval_s IS NOT NULL AND last_contact < ?", (now - 86400.0,)),
        (
            "SELECT COUNT(*) AS n FROM euiccs WHERE poll_interval_s IS NOT NULL AND last_contact + poll_interval_s < ?",
            (now,),
        ),
    ):
        yield Q(sql, args, "one")
    return None


def _all(sql: str):
    from eim.store.logic import Q

    rows = yield Q(sql, (), "all")
    return rows


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
            "by_sgp32_version": counts.by_sgp32_version,
            "smdps": len(counts.by_enabled_smdp),
            "unknown_smdp": counts.by_enabled_smdp.get("unknown", 0),
            "ended_24h": counts.ended_24h,
            "failure_rate_24h": round(counts.failure_rate_24h or 0.0, 4),
            "hourly_created": sum(h["created"] for h in counts.hourly),
            "hourly_polls": sum(h["polls"] for h in counts.hourly),
        }
        out["fleet_ms"] = await median_ms(lambda: s.fleet_counts(default_interval_s=86400.0))
        # the parts, alone: the contact counts (migration 0004), the tallies and the hourly series (0005), and for
        # comparison the GROUP BY over euiccs_binding that gave the registered count and bindings before the tallies
        at = time.time()
        out["contacts_ms"] = await median_ms(lambda: s._run(lambda: _contacts(at), write=False))
        out["by_binding_ms"] = await median_ms(
            lambda: s._run(lambda: _all("SELECT binding, COUNT(*) AS n FROM euiccs GROUP BY binding"), write=False)
        )
        out["hourly_ms"] = await median_ms(lambda: s._run(lambda: s.fleet.hourly(at), write=False))
        out["tallies_ms"] = await median_ms(lambda: s._run(lambda: _all(TALLIES_SQL), write=False))
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
            ("seen_between", "SELECT COUNT(*) FROM euiccs WHERE last_contact >= ? AND last_contact < ?", (0.0, 1.0)),
            (
                "own_silent",
                "SELECT COUNT(*) FROM euiccs WHERE poll_interval_s IS NOT NULL AND last_contact < ?",
                (0.0,),
            ),
            (
                "stale_own",
                "SELECT COUNT(*) FROM euiccs WHERE poll_interval_s IS NOT NULL AND last_contact + poll_interval_s < ?",
                (0.0,),
            ),
            ("binding", "SELECT binding, COUNT(*) FROM euiccs GROUP BY binding", ()),
            (
                "created",
                "SELECT CAST(created_at / 3600 AS INTEGER) AS h, COUNT(*) FROM operations"
                " WHERE created_at >= ? GROUP BY h",
                (0.0,),
            ),
            (
                "ended",
                "SELECT CAST(updated_at / 3600 AS INTEGER) AS h, status, COUNT(*) FROM operations WHERE status"
                " IN ('done', 'failed', 'expired', 'cancelled') AND updated_at >= ? GROUP BY h, status",
                (0.0,),
            ),
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


BAR_MS = 200.0  # issue 15: the overview page of 1,000,000 registered eUICCs renders in under 200 ms


async def _pg_plans(url: str) -> dict[str, str]:
    """The scan nodes of PostgreSQL's EXPLAIN for the overview's GROUP BY / range queries."""
    import asyncpg

    at = time.time() - 86400
    queries = {
        "seen": f"SELECT COUNT(*) FROM euiccs WHERE last_contact >= {at}",
        "binding": "SELECT binding, COUNT(*) FROM euiccs GROUP BY binding",
        "created": f"SELECT FLOOR(created_at / 3600)::BIGINT AS h, COUNT(*) FROM operations WHERE created_at >= {at}"
        " GROUP BY 1",
        "ended": "SELECT FLOOR(updated_at / 3600)::BIGINT AS h, status, COUNT(*) FROM operations WHERE status IN"
        f" ('done', 'failed', 'expired', 'cancelled') AND updated_at >= {at} GROUP BY 1, 2",
    }
    conn = await asyncpg.connect(url)
    try:
        out = {}
        for name, sql in queries.items():
            lines = [r[0].strip() for r in await conn.fetch("EXPLAIN " + sql)]
            out[name] = "; ".join(ln.split("  (")[0].lstrip("-> ") for ln in lines if "Scan" in ln)
        return out
    finally:
        await conn.close()


def _postgres(n: int, eids: list[str], n_ops: int, runs: int) -> dict[str, Any] | str:
    """The overview on a private PostgreSQL cluster; a message (str) when PostgreSQL cannot be started."""
    from demo.services import ServiceUnavailable, run_postgres

    try:
        with run_postgres() as pg:
            from bench.eim import new_pg_database

            url = asyncio.run(new_pg_database(pg.dsn))
            now = time.time()
            insert_s = asyncio.run(_pg_load(url, eids, now))
            recount_s = asyncio.run(_operations(url, eids, n_ops, now))
            asyncio.run(_pg_vacuum(url))
            t = asyncio.run(_timings(url, runs))
            t["plans"] = asyncio.run(_pg_plans(url))
            t["insert_s"] = insert_s
            t["recount_s"] = recount_s
            return t
    except ServiceUnavailable as exc:
        return f"PostgreSQL run skipped: {exc}"


def run(quick: bool = False, size: int | None = None) -> Section:
    n = size or (5_000 if quick else 1_000_000)
    runs = 3 if quick else 15
    n_ops = max(1000, n // 10)
    sec = Section("fleet_summary", "2b. Fleet summary (GET /v1/fleet) and label filters at scale")
    eids = eids_for(n)
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        path = str(Path(tmp) / "eim.db")
        url = f"sqlite:///{path}"
        now = time.time()
        insert_s = asyncio.run(bulk_register(url, eids, binding="http", last_contact=now))
        _spread(path, n, now)
        recount_s = asyncio.run(_operations(url, eids, n_ops, now))
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("ANALYZE")
        conn.close()
        t = asyncio.run(_timings(url, runs))
        plans = _plans(path)
        with_index = _contact_batch_ms(path, eids, runs)
        bare = str(Path(tmp) / "bare.db")
        shutil.copy(path, bare)
        conn = sqlite3.connect(bare, isolation_level=None)
        conn.execute("DROP INDEX euiccs_contact")
        conn.close()
        without_index = _contact_batch_ms(bare, eids, runs)
    pg = _postgres(n, eids, n_ops, runs)
    sec.figures = {
        "euiccs": n,
        "operations": n_ops,
        "insert_s": insert_s,
        "recount_s": recount_s,
        **{k: v for k, v in t.items() if k != "counts"},
        "counts": t["counts"],
        "contact_batch_ms": with_index,
        "contact_batch_no_index_ms": without_index,
        "plans": plans,
        "bar_ms": BAR_MS,
        "postgresql": pg,
    }
    sec.add(
        f"{n:,} registered eUICCs (a third seen within the hour, a third within the day, a third silent "
        "for days, 5 % never seen, 1 % with their own poll interval, 10 % labelled site=berlin, 20 % on SGP.32 v1.0, "
        "90 % with a known enabled profile over 12 SM-DP+s), "
        f"{n_ops:,} operations created over the last 48 h (70 % ended: done / failed / expired 85 / 10 / 5 %), one "
        f"poll counter per hour; median of {runs} calls on a warm database, in the store (no HTTP). SQLite: a WAL "
        "file; PostgreSQL: a private cluster like the tests' (`fsync=off`), `VACUUM ANALYZE` after the load."
    )
    sec.add("")
    rows: list[list[Any]] = [
        ["GET /v1/fleet: the whole overview (Store.fleet_counts, migrations 0004 + 0005)", t["fleet_ms"]],
        ["- of which never seen, seen 1 h / 24 h, stale (5 range counts on the 0004 indexes)", t["contacts_ms"]],
        ["- of which registered, by binding, SGP.32 version, SM-DP+ (fleet_tallies, migration 0005)", t["tallies_ms"]],
        ["- of which ended in 24 h, failure rate, 24 hourly buckets (3 range counts)", t["hourly_ms"]],
        ["for comparison: registered and by binding as a GROUP BY over euiccs_binding (before)", t["by_binding_ms"]],
        ["GET /v1/euiccs?label=site=berlin&limit=100 (first page)", t["label_page_ms"]],
        ["operations by kind and status (the /metrics gauge)", t["ops_by_status_ms"]],
    ]
    header = ["what", "SQLite ms"]
    if isinstance(pg, dict):
        header.append("PostgreSQL ms")
        keys = ["fleet_ms", "contacts_ms", "tallies_ms", "hourly_ms", "by_binding_ms"]
        keys += ["label_page_ms", "ops_by_status_ms"]
        for row, key in zip(rows, keys, strict=True):
            row.append(pg[key])
    rows.append([f"{min(20_000, n):,} last_contact values in one statement, with the contact index", with_index])
    rows.append(["the same without the contact index (before migration 0004)", without_index])
    for row in rows[-2:]:
        row.extend([""] * (len(header) - len(row)))
    sec.table(header, rows)
    verdict = [f"SQLite {t['fleet_ms']:.1f} ms → {t['fleet_ms'] / BAR_MS:.2f}× bar ({BAR_MS:.0f} ms)"]
    if isinstance(pg, dict):
        verdict.append(f"PostgreSQL {pg['fleet_ms']:.1f} ms → {pg['fleet_ms'] / BAR_MS:.2f}× bar ({BAR_MS:.0f} ms)")
    met = all(v <= BAR_MS for v in [t["fleet_ms"], *([pg["fleet_ms"]] if isinstance(pg, dict) else [])])
    sec.add(
        f"- Bar, the whole fleet overview (GET /v1/fleet) with {n:,} registered eUICCs: "
        + "; ".join(verdict)
        + (" met" if met else " **missed**")
        + ("" if isinstance(pg, dict) else " (PostgreSQL not run)")
    )
    if isinstance(pg, str):
        sec.add("")
        sec.add(pg)
    sec.add("")
    recount = f"{recount_s:.1f} s on SQLite" + (
        f", {pg['recount_s']:.1f} s on PostgreSQL" if isinstance(pg, dict) else ""
    )
    sec.add(
        "What each part costs: the contact counts are index-only range counts on `euiccs_contact` (they move with "
        "the clock: no counter can hold them), arranged to walk each index entry about once - seen within 24 h is "
        "seen within the hour plus the range between, the stale count is the registered count less those never "
        "seen and those seen since the threshold, less the few with their own interval (their partial index); the "
        "hourly series range counts on the last day's operations and 24 "
        "counter rows; the registered count and the counts by binding, SGP.32 version and enabled profile's "
        "SM-DP+ are read from `fleet_tallies` (`eim.store.tallies`): delta rows written in the transaction that "
        "registers, removes or changes an eUICC (inserts only, so no two PostgreSQL transactions wait for one "
        "counter row), folded into one row per value by the next overview once more than 500 pile up - a few "
        "dozen rows to sum instead of a walk through an index entry per registered eUICC (the last row: what the "
        "registered count and the bindings alone cost as a GROUP BY). Rebuilding the tallies from the registry "
        f"(`Store.recount_fleet_tallies`, after a bulk load around the store) took {recount}."
    )
    sec.add("")
    sec.add("Counts (SQLite): " + json.dumps(t["counts"]) + ". Query plans (SQLite's EXPLAIN QUERY PLAN):")
    sec.add("")
    for name, plan in plans.items():
        sec.add(f"- {name}: `{plan}`")
    if isinstance(pg, dict):
        sec.add("")
        sec.add("PostgreSQL's plans (scan nodes of EXPLAIN):")
        sec.add("")
        for name, plan in pg["plans"].items():
            sec.add(f"- {name}: `{plan}`")
    return sec
